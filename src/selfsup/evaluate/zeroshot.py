"""Zero-shot classification and cross-modal retrieval for image-text models (CLIP, section 3.1).

Zero-shot: each class name is put into several prompt templates; the normalised text embeddings
of a class are averaged and renormalised ("prompt ensembling", CLIP section 3.1.4); an image is
assigned the class whose embedding is most similar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPLATES = (
    "a {}.",
    "a photo of a {}.",
    "an image of a {}.",
    "a picture of a {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
)


@torch.no_grad()
def class_embeddings(
    encode_text: Callable[[list[str]], Tensor],
    classes: list[str],
    templates: tuple[str, ...] = TEMPLATES,
) -> Tensor:
    """(C, D) normalised class embeddings averaged over templates.

    Args:
        encode_text: callable ``list[str] -> (n, D)`` text embeddings.
        classes: class names.
        templates: prompt templates with one ``{}``.
    """
    rows = []
    for name in classes:
        emb = F.normalize(encode_text([t.format(name) for t in templates]).float(), dim=1)  # (T, D)
        rows.append(F.normalize(emb.mean(dim=0), dim=0))
    return torch.stack(rows)


def zeroshot_accuracy(image_emb: Tensor, class_emb: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) of images against class embeddings, and chance level."""
    from selfsup.evaluate.knn import topk_accuracy

    scores = F.normalize(image_emb.float(), dim=1) @ class_emb.T  # (N, C)
    result = topk_accuracy(scores, labels)
    result["chance"] = 100.0 / class_emb.shape[0]
    return result


def retrieval_recall(
    image_emb: Tensor, text_emb: Tensor, captions: list[str], ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Image->text and text->image recall@K (percent) over paired embeddings.

    Row i of both matrices is one pair. ``i2t_R@K`` counts a hit only for the paired item, as
    published figures do. Caption sets repeat captions (the generated shapes do, often), so
    ``*_R@K_same_caption`` also counts an item carrying the identical caption as correct; from
    an image it ranks the distinct captions (an identical caption embeds alike, so its copies
    would otherwise fill the top K, and R@5 and R@10 say no more than R@1).

    Args:
        image_emb: (N, D) image embeddings.
        text_emb: (N, D) text embeddings.
        captions: the N captions (to detect duplicates).
        ks: recall cut-offs.
    """
    image_emb = F.normalize(image_emb.float(), dim=1)
    text_emb = F.normalize(text_emb.float(), dim=1)
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_id = torch.tensor([ids[c] for c in captions])  # (N,) same id = same caption
    own = torch.arange(len(captions))  # (N,) the paired item
    sim = image_emb @ text_emb.T  # (N images, N texts)
    # (N images, C distinct captions): an image's similarity to a caption's closest copy
    by_caption = sim.new_full((len(captions), len(ids)), -torch.inf).scatter_reduce(
        1, caption_id.expand_as(sim), sim, reduce="amax"
    )
    result = {}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        top = s.topk(min(max(ks), s.shape[1]), dim=1).indices  # (N, K)
        strict = top == own[:, None]  # (N, K)
        if name == "i2t":
            top_captions = by_caption.topk(min(max(ks), len(ids)), dim=1).indices
            lenient = top_captions == caption_id[:, None]
        else:  # the images are distinct: any with the query's caption counts
            lenient = caption_id[top] == caption_id[:, None]  # (N, K)
        for k in ks:
            result[f"{name}_R@{k}"] = 100.0 * strict[:, :k].any(dim=1).float().mean().item()
        for k in ks:
            hit = lenient[:, :k].any(dim=1).float().mean().item()
            result[f"{name}_R@{k}_same_caption"] = 100.0 * hit
    return result
