"""Evaluation protocols for frozen encoders."""

from selfsup.evaluate.api import PROTOCOLS, embed, evaluate
from selfsup.evaluate.knn import knn_accuracy, knn_scores, topk_accuracy
from selfsup.evaluate.zeroshot import class_embeddings, retrieval_recall, zeroshot_accuracy

__all__ = [
    "PROTOCOLS",
    "class_embeddings",
    "embed",
    "evaluate",
    "knn_accuracy",
    "knn_scores",
    "retrieval_recall",
    "topk_accuracy",
    "zeroshot_accuracy",
]
