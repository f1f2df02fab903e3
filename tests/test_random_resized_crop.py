"""random_resized_crop: torchvision's boxes per image, its pixels per box, and the batch form's own draws."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop as TorchvisionRandomResizedCrop
from zoo.plugins.augmentations import random_resized_boxes, random_resized_crop_batch

import zoo
from zoo.data.augment import AugmentPipeline
from zoo.data.images import train_box

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
CPU = torch.device("cpu")


def build(**settings):
    return zoo.augmentations.build({"name": "random_resized_crop", **settings})


@pytest.mark.parametrize("height, width", [(375, 500), (32, 32), (12, 300)])
def test_per_image_box_is_torchvisions_get_params(height, width):
    step = build()
    for seed in range(25):
        torch.manual_seed(seed)
        image = torch.empty(1, height, width)
        expected = TorchvisionRandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
        assert step.per_image_box(height, width, torch.Generator().manual_seed(seed)) == tuple(expected)


def test_per_image_box_keeps_the_whole_image_with_probability_one_minus_p():
    gen = torch.Generator().manual_seed(0)
    assert all(build(p=0.0).per_image_box(40, 60, gen) == (0, 0, 40, 60) for _ in range(20))
    whole = sum(build(p=0.25).per_image_box(40, 60, gen) == (0, 0, 40, 60) for _ in range(800)) / 800
    assert 0.68 < whole < 0.82  # 0.75, give or take 4.5 standard deviations


def test_batch_pixels_are_torchvisions_resized_crop_of_the_same_box():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 20, 28, generator=gen)
    boxes = random_resized_boxes(24, 20, 28, SCALE, RATIO, gen, CPU)
    ours = random_resized_crop_batch(x, boxes, (20, 28))
    for image, box, out in zip(x, boxes.tolist(), ours):
        assert torch.allclose(out, TF.resized_crop(image, *box, [20, 28], antialias=True), atol=1e-6)
    # on uint8 images torchvision rounds in fixed point: within one level of ours
    pixels = (x * 255).round().to(torch.uint8)
    ours8 = random_resized_crop_batch(pixels.float() / 255, boxes, (20, 28)) * 255
    theirs8 = torch.stack(
        [TF.resized_crop(p, *box, [20, 28], antialias=True) for p, box in zip(pixels, boxes.tolist())]
    )
    assert (ours8 - theirs8.float()).abs().max() <= 1.0 + 1e-3


def test_batch_boxes_follow_train_box_and_differ_per_sample():
    n, h, w = 4000, 30, 40
    ours = random_resized_boxes(n, h, w, SCALE, RATIO, torch.Generator().manual_seed(2), CPU).double()
    gen = torch.Generator().manual_seed(3)
    reference = torch.tensor([train_box(h, w, SCALE, RATIO, gen) for _ in range(n)], dtype=torch.float64)
    for boxes in (ours, reference):
        top, left, bh, bw = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    # the same law: mean area share, log aspect and offsets agree within a few standard errors
    for stat in (
        lambda b: b[:, 2] * b[:, 3] / (h * w),
        lambda b: (b[:, 3] / b[:, 2]).log(),
        lambda b: b[:, 0] / (h - b[:, 2] + 1),
        lambda b: b[:, 1] / (w - b[:, 3] + 1),
    ):
        a, r = stat(ours), stat(reference)
        assert abs(a.mean() - r.mean()) < 4 * math.sqrt((a.var() + r.var()) / n)
    assert len(torch.unique(ours, dim=0)) > n / 4


def test_batch_boxes_fall_back_as_train_box_does_when_no_draw_fits():
    # no box of area share >= 0.9 with an aspect of 3 to 4 fits a square image
    boxes = random_resized_boxes(5, 32, 32, (0.9, 1.0), (3.0, 4.0), torch.Generator().manual_seed(0), CPU)
    expected = train_box(32, 32, (0.9, 1.0), (3.0, 4.0), torch.Generator().manual_seed(0))
    assert boxes.tolist() == [list(expected)] * 5


def test_pipeline_crops_every_sample_differently_and_p_zero_keeps_it():
    one = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    x = one.expand(32, -1, -1, -1).contiguous()
    labels = torch.zeros(32, dtype=torch.long)
    out, _ = AugmentPipeline([{"name": "random_resized_crop"}], 2, seed=0)(x, labels)
    assert out.shape == x.shape and len(torch.unique(out.flatten(1), dim=0)) == 32
    same, _ = AugmentPipeline([{"name": "random_resized_crop", "p": 0.0}], 2, seed=0)(x, labels)
    assert torch.equal(same, x)
