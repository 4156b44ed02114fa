"""DINO's loss, centre and teacher-temperature schedule against independent computations, and the
centre over two gloo processes.

(Named ``test_dino_loss.py``: ``tests/methods/test_dino.py`` holds the method's tests, and pytest's
default import mode rejects two test modules with one basename.)"""

import math

import numpy as np
import pytest
import torch

from selfsup.losses.dino import dino_loss, teacher_temperature, updated_center
from selfsup.testing import spawn_gloo


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def dino_reference(student, teacher, center, s_temp, t_temp):
    """Loops over teacher crop i, student crop v != i, and sample n (algorithm 1 of the paper)."""
    student, teacher, center = (t.double().numpy() for t in (student, teacher, center.view(-1)))
    total, pairs = 0.0, 0
    for i in range(teacher.shape[0]):
        for v in range(student.shape[0]):
            if v == i:
                continue
            for n in range(student.shape[1]):
                target = _softmax((teacher[i, n] - center) / t_temp)
                total -= float(np.sum(target * np.log(_softmax(student[v, n] / s_temp))))
            pairs += 1
    return total / (pairs * student.shape[1])


def test_dino_loss_matches_loops_over_pairs_of_different_views():
    torch.manual_seed(0)
    student = torch.randn(5, 3, 7)  # V=5 crops (2 global first), B=3, K=7
    teacher = torch.randn(2, 3, 7)
    center = torch.randn(1, 7) * 0.1
    for s_temp, t_temp in ((0.1, 0.04), (0.1, 0.07), (0.5, 0.2)):
        got = float(dino_loss(student, teacher, center, s_temp, t_temp))
        assert math.isclose(
            got, dino_reference(student, teacher, center, s_temp, t_temp), rel_tol=1e-5
        )


def test_same_view_pairs_are_excluded():
    torch.manual_seed(1)
    teacher, student, center = torch.randn(2, 4, 6), torch.randn(2, 4, 6), torch.randn(1, 6)
    targets = torch.softmax((teacher - center) / 0.04, dim=-1)  # (T=2, B, K)
    cross = (
        torch.nn.functional.cross_entropy(student[1] / 0.1, targets[0])
        + torch.nn.functional.cross_entropy(student[0] / 0.1, targets[1])
    ) / 2  # only the (teacher 0, student 1) and (teacher 1, student 0) pairs
    assert torch.allclose(dino_loss(student, teacher, center, 0.1, 0.04), cross, atol=1e-6)


def test_dino_loss_is_float32_under_autocast_and_teacher_gets_no_gradient():
    student = torch.randn(3, 2, 5).bfloat16().requires_grad_(True)
    teacher = torch.randn(2, 2, 5).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dino_loss(student, teacher, torch.zeros(1, 5), 0.1, 0.04)
    assert loss.dtype == torch.float32 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_center_ema():
    torch.manual_seed(2)
    center = torch.randn(1, 4)
    out = torch.randn(6, 4)
    new = updated_center(center, out, 0.9)
    assert torch.allclose(
        new, 0.9 * center + 0.1 * torch.from_numpy(out.numpy().mean(axis=0)), atol=1e-6
    )
    for _ in range(300):  # a constant batch mean is the fixed point
        new = updated_center(new, out, 0.9)
    assert torch.allclose(new, out.mean(dim=0, keepdim=True), atol=1e-5)


@pytest.mark.parametrize(
    "progress, expected",
    [(0.0, 0.04), (0.025, 0.0475), (0.05, 0.055), (0.1, 0.07), (0.5, 0.07), (1.0, 0.07)],
)
def test_teacher_temperature_schedule(progress, expected):
    assert math.isclose(teacher_temperature(progress, 0.1, 0.04, 0.07), expected, rel_tol=1e-9)


def test_teacher_temperature_without_warmup():
    assert teacher_temperature(0.0, 0.0, 0.04, 0.07) == 0.07


def _center_from_my_rows(rank, world, center, out):
    b = out.shape[0] // world
    return updated_center(center, out[rank * b : (rank + 1) * b], 0.9)


def test_two_process_center_uses_the_global_batch_mean():
    torch.manual_seed(3)
    center, out = torch.randn(1, 4), torch.randn(6, 4)
    out[:3] += 5.0  # the processes' local means differ
    got = spawn_gloo(_center_from_my_rows, center, out, world_size=2)
    expected = updated_center(center, out, 0.9)
    for rank in (0, 1):
        assert torch.allclose(got[rank], expected, atol=1e-6)
