import math

import pytest
import torch

from selfsup.evaluate.knn import knn_accuracy, knn_scores
from selfsup.evaluate.zeroshot import class_embeddings, retrieval_recall, zeroshot_accuracy


def test_knn_weighted_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    scores = knn_scores(bank, labels, query, num_classes=2, k=2, temperature=0.5)
    q = query[0] / query[0].norm()
    s0, s1 = float(q @ bank[0]), float(q @ bank[1])  # the two nearest
    assert math.isclose(float(scores[0, 0]), math.exp(s0 / 0.5), rel_tol=1e-5)
    assert math.isclose(float(scores[0, 1]), math.exp(s1 / 0.5), rel_tol=1e-5)


def test_knn_accuracy_on_separable_clusters():
    torch.manual_seed(0)
    centres = torch.randn(3, 8) * 5
    y = torch.arange(3).repeat(20)
    x = centres[y] + 0.1 * torch.randn(60, 8)
    acc = knn_accuracy(x[:45], y[:45], x[45:], y[45:], num_classes=3, k=5)
    assert acc["top1"] == 100.0 and "top5" not in acc  # top-5 is undefined with 3 classes


def test_zeroshot_prompt_ensembling_picks_right_class():
    vocab = {"red": torch.tensor([1.0, 0.0]), "blue": torch.tensor([0.0, 1.0])}

    def encode(texts):
        return torch.stack([vocab["red"] if "red" in t else vocab["blue"] for t in texts])

    classes = class_embeddings(encode, ["red", "blue"])
    images = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    result = zeroshot_accuracy(images, classes, torch.tensor([0, 1]))
    assert result["top1"] == 100.0 and result["chance"] == 50.0


def test_retrieval_recall_counts_duplicates_as_correct():
    img = torch.eye(4)
    txt = torch.eye(4)[[1, 0, 2, 3]] + 0.3 * torch.eye(4)  # pairs 0 and 1 swapped, own text second
    r = retrieval_recall(img, txt, ["a", "b", "c", "d"], ks=(1, 2))
    assert r["i2t_R@1"] == 50.0 and r["i2t_R@2"] == 100.0 and r["t2i_R@1"] == 50.0
    r = retrieval_recall(img, txt, ["a", "a", "c", "d"], ks=(1,))  # same caption
    assert r["i2t_R@1"] == 50.0 and r["i2t_R@1_same_caption"] == 100.0


def test_same_caption_recall_ranks_distinct_captions():
    # 6 copies of "x" (identical embeddings, as identical captions embed) and one "y"; the "y"
    # image is closest to "x": its own caption is second among the distinct captions, though
    # seventh among the texts
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    txt = torch.stack([x] * 6 + [y])
    img = torch.stack([x] * 6 + [torch.tensor([1.0, 0.8])])
    r = retrieval_recall(img, txt, ["x"] * 6 + ["y"], ks=(1, 2, 5))
    same = [r[f"i2t_R@{k}_same_caption"] for k in (1, 2, 5)]
    assert same == pytest.approx([600 / 7, 100.0, 100.0])
