"""Evaluation metrics beyond accuracy: per-class precision/recall, macro F1, top-k, ROC-AUC, PR-AUC."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.monitoring.metrics import classification_metrics


def one_hot_probs(pred, k=3, confidence=0.8):
    probs = torch.full((len(pred), k), (1 - confidence) / (k - 1))
    probs[torch.arange(len(pred)), torch.tensor(pred)] = confidence
    return probs


def test_perfect_predictions_score_one_everywhere():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    m = classification_metrics(one_hot_probs([0, 1, 2, 0, 1, 2]), y)
    assert m["macro_f1"] == pytest.approx(1) and m["roc_auc"] == pytest.approx(1) and m["pr_auc"] == pytest.approx(1)
    assert m["precision"] == pytest.approx([1, 1, 1]) and m["recall"] == pytest.approx([1, 1, 1])


def test_per_class_precision_and_recall_follow_their_definitions():
    # class 0: tp=2, fp=1 (a 1 predicted as 0), fn=0; class 1: tp=1, fn=1; class 2: tp=2
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(one_hot_probs([0, 0, 0, 1, 2, 2]), y)
    assert m["precision"] == pytest.approx([2 / 3, 1.0, 1.0])  # tp / (tp + fp)
    assert m["recall"] == pytest.approx([1.0, 0.5, 1.0])  # tp / (tp + fn)
    f1 = [2 * p * r / (p + r) for p, r in zip(m["precision"], m["recall"])]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["top5_acc"] == pytest.approx(1.0)  # 3 classes: the true class is always among the top 3


def test_ranking_metrics_see_confidence_not_just_the_argmax():
    y = torch.tensor([0, 1] * 10)
    sharp = torch.stack([torch.tensor([0.9, 0.1]) if c == 0 else torch.tensor([0.1, 0.9]) for c in y])
    # same argmax everywhere, but the scores no longer separate the classes
    flat = torch.stack([torch.tensor([0.6, 0.4]) for _ in y])
    assert classification_metrics(sharp, y)["roc_auc"] == pytest.approx(1)
    assert classification_metrics(flat, y)["roc_auc"] == pytest.approx(0.5)


# --- classes absent from the split: checked against scikit-learn, computed independently per class ---

def sklearn_reference(probs: torch.Tensor, y: torch.Tensor) -> dict:
    """The macro metrics as scikit-learn computes them, over the classes each is defined for."""
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    p, t = probs.double().numpy(), y.numpy()
    k = p.shape[1]
    present = [c for c in range(k) if (t == c).any()]
    two_sided = [c for c in present if (t != c).any()]
    pred = p.argmax(1)
    # labels=None: scikit-learn averages F1 over the classes in the labels or the predictions
    return {
        "roc_auc": float(np.mean([roc_auc_score(t == c, p[:, c]) for c in two_sided])) if two_sided else None,
        "pr_auc": float(np.mean([average_precision_score(t == c, p[:, c]) for c in present])),
        "macro_f1": float(f1_score(t, pred, average="macro")),
        "precision": precision_score(t, pred, labels=range(k), average=None, zero_division=np.nan).tolist(),
        "recall": recall_score(t, pred, labels=range(k), average=None, zero_division=np.nan).tolist(),
    }


def assert_matches(ours: dict, reference: dict) -> None:
    import math

    for key in ("roc_auc", "pr_auc", "macro_f1"):
        if reference[key] is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(reference[key], abs=1e-5), key
    for key in ("precision", "recall"):
        expected = [None if math.isnan(v) else pytest.approx(v, abs=1e-6) for v in reference[key]]
        assert ours[key] == expected, key


def test_a_class_absent_from_the_split_is_left_out_of_the_auc_not_counted_as_zero():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    y = torch.tensor([0, 0, 1, 1])
    m = classification_metrics(probs, y)
    assert m["roc_auc"] == 1.0 and m["auc_classes"] == 2  # was 0.667: class 2 counted as an AUC of 0
    assert m["pr_auc"] == 1.0 and m["macro_f1"] == 1.0
    assert m["recall"] == [1.0, 1.0, None] and m["precision"] == [1.0, 1.0, None]  # 0/0: undefined, not 0
    assert_matches(m, sklearn_reference(probs, y))


def test_one_class_only_has_no_roc_auc():
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics(probs, torch.tensor([0, 0]))
    assert m["roc_auc"] is None and m["auc_classes"] == 0  # no negatives for class 0, no positives for 1
    assert m["pr_auc"] == 1.0 and m["recall"] == [0.5, None]


@st.composite
def labelled_probabilities(draw):
    k = draw(st.integers(2, 6))
    n = draw(st.integers(2, 40))
    # labels from a random subset of the classes, so some classes are often absent
    used = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    y = draw(st.lists(st.sampled_from(used), min_size=n, max_size=n))
    # scores on a coarse grid, so ties (which both libraries must credit half) are common
    raw = draw(st.lists(st.integers(1, 8), min_size=n * k, max_size=n * k))
    probs = torch.tensor(raw, dtype=torch.float32).view(n, k)
    return probs / probs.sum(1, keepdim=True), torch.tensor(y)


@settings(max_examples=150, deadline=None)
@given(labelled_probabilities())
def test_macro_metrics_match_sklearn_on_random_splits(case):
    probs, y = case
    assert_matches(classification_metrics(probs, y), sklearn_reference(probs, y))
