"""DINO's self-distillation loss, teacher centring and teacher-temperature schedule.

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", section 3.1 and
algorithm 1: the student's softmax over K output dimensions, at temperature 0.1, is trained to
match the teacher's centred and sharpened softmax on every (teacher global crop, student crop)
pair of different views. The centre is an EMA of the teacher's batch-mean output.

Index legend: B samples on this process, W world size, K output dimensions, T teacher crops,
V student crops (the first T of which are the teacher's crops).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.distributed import world_info


def dino_loss(
    student: Tensor,
    teacher: Tensor,
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """Cross entropy between teacher and student distributions over all pairs of different views.

    ``P_t = softmax((teacher - center) / teacher_temp)``, ``P_s = softmax(student /
    student_temp)``; the loss is ``-sum_k P_t[i] log P_s[v]`` averaged over the batch and over the
    pairs (i, v) with v != i (a crop is never compared with itself). Float32, autocast off.

    Args:
        student: (V, B, K) student outputs of every crop, the T global crops first.
        teacher: (T, B, K) teacher outputs of the global crops (no gradient needed).
        center: (K,) or (1, K) centre subtracted from the teacher outputs.
        student_temp: student temperature.
        teacher_temp: teacher temperature (from :func:`teacher_temperature`).

    Returns:
        Scalar loss.
    """
    num_teacher, num_student = teacher.shape[0], student.shape[0]
    if num_student < 2 or num_teacher > num_student:
        raise ValueError(
            f"need V >= 2 student crops and T <= V, got V={num_student}, T={num_teacher}"
        )
    with torch.autocast(student.device.type, enabled=False):
        targets = F.softmax((teacher.float() - center.float()) / teacher_temp, dim=-1)  # (T, B, K)
        log_p = F.log_softmax(student.float() / student_temp, dim=-1)  # (V, B, K)
        # t: teacher crop, v: student crop, b: sample, k: output dimension
        cross = -torch.einsum("tbk,vbk->tv", targets.detach(), log_p) / student.shape[1]  # (T, V)
        same = torch.eye(num_teacher, num_student, dtype=torch.bool, device=student.device)
        return cross[~same].mean()


@torch.no_grad()
def updated_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """``momentum * center + (1 - momentum) * mean(teacher)``, the mean over the global batch.

    Args:
        center: (1, K) current centre.
        teacher: (N, K) teacher outputs on this process (every crop of every sample).
        momentum: EMA rate m (DINO: 0.9).

    Returns:
        (1, K) new centre, identical on every process.
    """
    total = teacher.float().sum(dim=0, keepdim=True)  # (1, K)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    batch_center = total / (teacher.shape[0] * world_info()[1])  # (1, K)
    return center * momentum + batch_center * (1.0 - momentum)


def teacher_temperature(
    progress: float, warmup: float = 0.1, start: float = 0.04, end: float = 0.07
) -> float:
    """Teacher temperature: linear from ``start`` to ``end`` over the first ``warmup`` of training,
    then constant (DINO: 0.04 -> 0.07 over 30 of 300 epochs, i.e. ``warmup`` = 0.1).

    Args:
        progress: fraction of training done, in [0, 1].
        warmup: fraction of training spent warming up (0 = ``end`` from the start).
        start: temperature at the start.
        end: temperature after the warm-up.
    """
    if warmup <= 0 or progress >= warmup:
        return end
    return start + (end - start) * max(progress, 0.0) / warmup
