"""Classification metrics from predicted probabilities or predicted classes: what evaluation reports and W&B records.

Macro averages run over the classes each metric is defined for on the split at hand, as scikit-learn's
do: a class absent from the labels has no ROC curve (no positives) and no recall, and counting it as 0
would drag the average down for a split that merely lacks it (a rare class in a small validation split).
What is undefined is reported as ``None``, never as 0.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


def _defined_mean(values: torch.Tensor, defined: torch.Tensor) -> float | None:
    return float(values[defined].mean()) if bool(defined.any()) else None


def _where_defined(values: torch.Tensor, defined: torch.Tensor) -> list[float | None]:
    return [float(v) if ok else None for v, ok in zip(values.tolist(), defined.tolist())]


def decision_metrics(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Per-class precision and recall, macro F1 and the confusion matrix of predicted classes (torchmetrics).

    Precision is undefined for a class never predicted, recall for a class not in ``y`` (``None``);
    macro F1 averages over the classes that occur in ``y`` or in ``pred`` (scikit-learn's ``labels=None``).
    """
    from torchmetrics.functional import classification as C

    support = torch.bincount(y, minlength=num_classes)
    predicted = torch.bincount(pred, minlength=num_classes)
    f1 = C.multiclass_f1_score(pred, y, num_classes, average=None)
    return {
        "macro_f1": _defined_mean(f1, (support > 0) | (predicted > 0)),
        "precision": _where_defined(C.multiclass_precision(pred, y, num_classes, average=None), predicted > 0),
        "recall": _where_defined(C.multiclass_recall(pred, y, num_classes, average=None), support > 0),
        # rows: true class, columns: predicted
        "confusion": C.multiclass_confusion_matrix(pred, y, num_classes).tolist(),
    }


def ranking_metrics(probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Top-5 accuracy and one-vs-rest macro ROC-AUC and PR-AUC (average precision), torchmetrics per class.

    ROC-AUC needs a class's positives and negatives both in ``y``; PR-AUC needs its positives. The macro
    figures average over those classes (``auc_classes`` counts the ROC-AUC ones) and are ``None`` when none is.
    """
    from torchmetrics.functional import classification as C

    k = probs.shape[1]
    support = torch.bincount(y, minlength=k)
    with warnings.catch_warnings():
        # torchmetrics warns about each class without positives; those are left out below
        warnings.simplefilter("ignore", UserWarning)
        auroc = C.multiclass_auroc(probs, y, k, average=None)
        average_precision = C.multiclass_average_precision(probs, y, k, average=None)
    two_sided = (support > 0) & (support < len(y))
    return {
        "top5_acc": float(C.multiclass_accuracy(probs, y, k, top_k=min(5, k), average="micro")),
        "roc_auc": _defined_mean(auroc, two_sided),
        "pr_auc": _defined_mean(average_precision, support > 0),
        "auc_classes": int(two_sided.sum()),
    }


def classification_metrics(probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Top-k accuracy, per-class precision and recall, macro F1, ROC-AUC, PR-AUC and the confusion matrix of
    class probabilities."""
    return {**ranking_metrics(probs, y), **decision_metrics(probs.argmax(-1), y, probs.shape[1])}


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels under class probabilities (clamped away from log 0)."""
    return float(-probs.clamp_min(1e-12).log().gather(1, y.view(-1, 1)).mean())


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """The share of rows whose most probable class is the label."""
    return float((probs.argmax(-1) == y).float().mean())
