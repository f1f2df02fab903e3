"""Evaluation metrics beyond accuracy: per-class precision/recall, macro F1, top-k, ROC-AUC, PR-AUC."""

from __future__ import annotations

import pytest
import torch

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
