"""Classification metrics from predicted probabilities: what evaluation reports and W&B records."""

from __future__ import annotations

from typing import Any

import torch


def classification_metrics(probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Top-k accuracy, per-class precision and recall, macro F1, ROC-AUC, PR-AUC and the confusion matrix
    (rows: true class, columns: predicted), from torchmetrics."""
    from torchmetrics.functional import classification as C

    k = probs.shape[1]
    out: dict[str, Any] = {
        "top5_acc": float(C.multiclass_accuracy(probs, y, k, top_k=min(5, k), average="micro")),
        "macro_f1": float(C.multiclass_f1_score(probs, y, k, average="macro")),
        "roc_auc": float(C.multiclass_auroc(probs, y, k, average="macro")),
        "pr_auc": float(C.multiclass_average_precision(probs, y, k, average="macro")),
        "precision": C.multiclass_precision(probs, y, k, average=None).tolist(),
        "recall": C.multiclass_recall(probs, y, k, average=None).tolist(),
        "confusion": C.multiclass_confusion_matrix(probs, y, k).tolist(),
    }
    return out


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """The share of rows whose most probable class is the label."""
    return float((probs.argmax(-1) == y).float().mean())
