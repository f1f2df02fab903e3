"""Batch augmentations: shapes, per-sample randomness, exact geometry, and the pipeline's soft targets."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo.plugins.augmentations import (
    affine_batch,
    box_bounds,
    color_jitter_batch,
    color_jitter_torch,
    cow_mask,
    cutmix_batch,
    flip_batch,
    paste_boxes,
    sample_beta,
    translate_batch,
)

import zoo
from zoo.core.errors import RegistryError
from zoo.data import augment_cpu
from zoo.data.augment import AugmentPipeline, gather_pixels


@pytest.fixture(params=["cpu_kernels", "torch_ops"])
def path(request, monkeypatch):
    """Runs a test twice: with every batch through the compiled CPU loops, and with none (torch ops only)."""
    import zoo.data.augment as augment

    monkeypatch.setattr(augment, "CPU_KERNEL_MIN_VALUES", 0 if request.param == "cpu_kernels" else 1 << 62)
    return request.param


def images(b=8, c=3, h=8, w=8, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 9),
    c=st.integers(1, 3),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    padding=st.integers(1, 3),
    mode=st.sampled_from(["constant", "reflect", "replicate", "circular"]),
    seed=st.integers(0, 2**16),
)
def test_translate_matches_pad_then_crop_per_image(b, c, h, w, padding, mode, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=gen)
    dy = torch.randint(-padding, padding + 1, (b,), generator=gen)
    dx = torch.randint(-padding, padding + 1, (b,), generator=gen)
    out = translate_batch(x, dy, dx, mode)
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode=mode)
    for i in range(b):
        top, left = padding + dy[i], padding + dx[i]
        assert torch.equal(out[i], padded[i, :, top : top + h, left : left + w])
    assert out.shape == x.shape and out.dtype == x.dtype


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 17), seed=st.integers(0, 2**16))
def test_crop_keeps_shape_dtype_and_label_mass(b, seed):
    pipe = AugmentPipeline([{"name": "crop", "padding": 2}], num_classes=5, seed=seed)
    x = images(b)
    labels = torch.randint(0, 5, (b,))
    out, y = pipe(x, labels)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(y.sum(1), torch.ones(b))
    assert torch.equal(y.argmax(1), labels)  # crop does not touch the label


def test_crop_draws_per_sample_not_per_batch():
    x = images(1).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    out, _ = AugmentPipeline([{"name": "crop", "padding": 2}], 10)(x, torch.zeros(64, dtype=torch.long))
    distinct = torch.unique(out.flatten(1), dim=0)
    assert len(distinct) >= 10  # 25 possible shifts; one draw per batch would give 1


def test_probability_zero_changes_nothing_and_half_changes_about_half():
    x = images(400, c=1)
    out, _ = AugmentPipeline([{"name": "crop", "padding": 1, "p": 0.0}], 2)(x, torch.zeros(400, dtype=torch.long))
    assert torch.equal(out, x)
    out, _ = AugmentPipeline([{"name": "crop", "padding": 1, "p": 0.5}], 2)(x, torch.zeros(400, dtype=torch.long))
    changed = (out != x).flatten(1).any(1).float().mean().item()
    # chosen with p = 0.5, and then 1 in 9 chosen samples draws the zero shift
    assert 0.35 < changed < 0.55


def test_pipeline_is_seeded():
    x = images(16)
    y = torch.zeros(16, dtype=torch.long)
    a, _ = AugmentPipeline([{"name": "crop"}], 10, seed=3)(x, y)
    b, _ = AugmentPipeline([{"name": "crop"}], 10, seed=3)(x, y)
    c, _ = AugmentPipeline([{"name": "crop"}], 10, seed=4)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentations_describe_their_paper_and_math():
    entry = zoo.augmentations.get("crop")
    doc = entry.obj.__doc__
    assert "Krizhevsky" in doc and "out[i, j]" in doc
    assert entry.signature_text().startswith("crop(padding: int >= 1 = 4")


# --- the augmentations beyond crop --------------------------------------------------------------------

# Every registered augmentation, with settings strong enough that a chosen sample visibly changes.
SPECS = {
    "flip": {"name": "flip", "vertical": True},
    "crop": {"name": "crop", "padding": 2},
    "color_jitter": {"name": "color_jitter", "brightness": 0.5, "contrast": 0.5, "saturation": 0.5,
                     "hue": 0.2},
    "affine": {"name": "affine", "degrees": 30, "translate": 0.2, "scale": [0.8, 1.2], "shear": 10},
    "random_resized_crop": {"name": "random_resized_crop"},
    "cutout": {"name": "cutout", "size": 0.5},
    "cutmix": {"name": "cutmix", "alpha": 1.0},
    "cowmix": {"name": "cowmix"},
    "mixup": {"name": "mixup", "alpha": 1.0},
    "randaugment": {"name": "randaugment"},
    "trivialaugment": {"name": "trivialaugment"},
    "autoaugment": {"name": "autoaugment", "policy": "cifar10"},
    "random_erasing": {"name": "random_erasing", "p": 1.0},
}
MIXING = ["cutmix", "cowmix", "mixup"]


def test_every_registered_augmentation_is_covered():
    assert sorted(SPECS) == zoo.augmentations.names()


def run(spec, x, labels, num_classes, seed=0):
    return AugmentPipeline([spec], num_classes=num_classes, seed=seed)(x, labels)


def constant_images(b, c=3, h=8, w=8):
    """Image i is filled with its own value, so each output pixel tells which image it came from."""
    values = torch.arange(1, b + 1, dtype=torch.float32) / (b + 1)
    return values.view(b, 1, 1, 1).expand(b, c, h, w).contiguous(), values


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 9),
    c=st.sampled_from([1, 3]),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    seed=st.integers(0, 2**16),
)
def test_shape_dtype_range_and_label_mass(name, b, c, h, w, seed):
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    labels = torch.randint(0, 4, (b,), generator=torch.Generator().manual_seed(seed + 1))
    out, y = run(SPECS[name], x, labels, 4, seed)
    assert out.shape == x.shape and out.dtype == x.dtype
    if name != "random_erasing":  # its noise is N(0, 1) once standardized: beyond [0, 1] in pixels
        assert out.min() >= 0 and out.max() <= 1
    assert y.shape == (b, 4) and y.dtype == torch.float32
    assert y.min() >= 0 and torch.allclose(y.sum(1), torch.ones(b), atol=1e-6)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_probability_zero_is_the_identity(name, path):
    x = images(7)
    labels = torch.arange(7) % 3
    out, y = run({**SPECS[name], "p": 0.0}, x, labels, 3)
    assert torch.equal(out, x)
    assert torch.equal(y, torch.nn.functional.one_hot(labels, 3).float())


@pytest.mark.parametrize("name", sorted(set(SPECS) - set(MIXING)))
def test_draws_per_sample_not_per_batch(name):
    x = images(1, h=12, w=12).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    out, _ = run(SPECS[name], x, torch.zeros(64, dtype=torch.long), 2)
    distinct = len(torch.unique(out.flatten(1), dim=0))
    assert distinct >= (4 if name == "flip" else 20)  # flip has 4 outcomes; one draw per batch gives 1


@pytest.mark.parametrize("name", MIXING)
def test_mixing_draws_per_sample_not_per_batch(name):
    x, _ = constant_images(64, h=16, w=16)
    _, y = run(SPECS[name], x, torch.arange(64), 64)
    own = y.diagonal()  # the weight each image keeps of itself: its own lambda
    assert len(torch.unique(own)) >= 20  # one draw per batch would give 1 or 2


@pytest.mark.parametrize("name", ["cutmix", "cowmix"])
@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), hw=st.sampled_from([(8, 8), (5, 11), (16, 16)]), seed=st.integers(0, 2**16))
def test_pasting_weights_each_image_by_the_pixels_it_contributes(name, b, hw, seed):
    x, values = constant_images(b, 3, *hw)
    out, y = run(SPECS[name], x, torch.arange(b), b, seed)
    for i in range(b):
        sources = y[i].nonzero().flatten()
        assert len(sources) <= 2  # the image itself and its partner
        pixels = out[i].flatten()
        for k in sources:
            share = (pixels == values[k]).float().mean()
            assert torch.isclose(share, y[i, k], atol=1e-6)
        assert torch.isclose(y[i, sources].sum(), torch.tensor(1.0))  # no pixel from anywhere else


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), alpha=st.sampled_from([0.2, 1.0, 4.0]), seed=st.integers(0, 2**16))
def test_mixup_blends_pixels_and_targets_with_the_same_lambda(b, alpha, seed):
    x, values = constant_images(b)
    out, y = run({"name": "mixup", "alpha": alpha}, x, torch.arange(b), b, seed)
    assert ((y > 0).sum(1) <= 2).all()
    expected = y @ values  # sum_k y[i, k] v_k: what the pixels must be if they mixed like the targets
    assert torch.allclose(out, expected.view(b, 1, 1, 1).expand_as(out), atol=1e-6)


@pytest.mark.parametrize("name", MIXING)
def test_mixing_keeps_unchosen_samples_whole(name):
    x, values = constant_images(400, h=6, w=6)
    out, y = run({**SPECS[name], "p": 0.5}, x, torch.arange(400), 400)
    untouched = (y.diagonal() == 1) & (out == x).flatten(1).all(1)
    # about half are not chosen; a chosen one is untouched only if its partner is itself
    assert 0.4 < untouched.float().mean() < 0.6


# --- exactness ---------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_flip_batch_is_exact(b, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 2, h, w, generator=gen)
    horizontal = torch.rand(b, generator=gen) < 0.5
    vertical = torch.rand(b, generator=gen) < 0.5
    out = flip_batch(x, horizontal, vertical)
    for i in range(b):
        expected = x[i]
        if horizontal[i]:
            expected = expected[:, :, list(range(w - 1, -1, -1))]
        if vertical[i]:
            expected = expected[:, list(range(h - 1, -1, -1))]
        assert torch.equal(out[i], expected)


def test_flip_only_mirrors_left_right_by_default():
    x = images(200)
    out, _ = run({"name": "flip"}, x, torch.zeros(200, dtype=torch.long), 2)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    assert 0.35 < mirrored.float().mean() < 0.65  # p = 0.5


@settings(max_examples=25, deadline=None)
@given(centre=st.integers(0, 15), length=st.integers(0, 20), size=st.integers(1, 16))
def test_box_bounds_are_the_box_clipped_to_the_image(centre, length, size):
    centre = min(centre, size - 1)
    lo, hi = box_bounds(torch.tensor([centre]), torch.tensor([length]), size)
    inside = [i for i in range(centre - length // 2, centre - length // 2 + length) if 0 <= i < size]
    assert list(range(lo.item(), hi.item())) == inside


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 7), h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_cutmix_pastes_exactly_the_box(b, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, 5, (b,), generator=gen), 5).float()
    partner = torch.randperm(b, generator=gen)
    rows = torch.sort(torch.randint(0, h + 1, (b, 2), generator=gen), 1).values
    cols = torch.sort(torch.randint(0, w + 1, (b, 2), generator=gen), 1).values
    out, mixed = cutmix_batch(x, y, partner, rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1])
    for i in range(b):
        (top, bottom), (left, right), j = rows[i].tolist(), cols[i].tolist(), partner[i]
        expected = x[i].clone()
        expected[:, top:bottom, left:right] = x[j, :, top:bottom, left:right]
        assert torch.equal(out[i], expected)
        lam = 1 - (bottom - top) * (right - left) / (h * w)
        assert torch.allclose(mixed[i], lam * y[i] + (1 - lam) * y[j])


def test_cutmix_box_sides_follow_lambda_away_from_borders():
    # alpha large: lambda within a few % of 0.5, so an unclipped box has sides 32 sqrt(0.5) ~ 22
    x, values = constant_images(128, c=1, h=32, w=32)
    out, y = run({"name": "cutmix", "alpha": 1000.0}, x, torch.arange(128), 128)
    unclipped = 0
    for i in range(128):
        pasted = out[i, 0] != values[i]
        if not pasted.any():
            continue  # its partner was itself
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        assert pasted.sum() == len(rows) * len(cols)  # one rectangle
        if rows[0] > 0 and cols[0] > 0 and rows[-1] < 31 and cols[-1] < 31:
            unclipped += 1
            assert len(rows) == len(cols) and 21 <= len(rows) <= 23
    assert unclipped >= 5


# --- colour ------------------------------------------------------------------------------------------

TV_STEPS = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
ALL_ORDERS = torch.tensor(list(itertools.permutations(range(4))))  # the 24 orders, one per image
JITTER_IMPLEMENTATIONS = {"cpu_kernel": augment_cpu.color_jitter, "torch": color_jitter_torch}


def torchvision_jitter(x, factors, order):
    """What torchvision's ColorJitter does to each image, given its factors and order."""
    out = []
    for i in range(len(x)):
        image = x[i]
        for step in order[i].tolist():
            image = TV_STEPS[step](image, factors[i, step].item())
        out.append(image)
    return torch.stack(out)


def colourful_images(b, h=9, w=7, seed=0):
    """Random images with the awkward cases in: flat gray, saturated white, a channel at zero, primaries."""
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))
    x[0] = 0.5
    x[1, :, :3] = 1.0
    x[2, 0] = 0
    x[3, :, 0, :3] = torch.eye(3)
    return x


@pytest.mark.parametrize("impl", sorted(JITTER_IMPLEMENTATIONS))
@pytest.mark.parametrize(
    "factors",
    [(1.4, 0.6, 1.4, 0.1), (0.6, 1.4, 0.6, -0.1), (1.3, 1.3, 1.3, 0.5), (0.0, 0.0, 0.0, -0.5)],
)
def test_color_jitter_is_torchvisions_for_every_order(impl, factors):
    # all 24 orders, with factors above 1 so that clamping between the steps matters
    x = colourful_images(24)
    f = torch.tensor(factors).expand(24, 4)
    ours = JITTER_IMPLEMENTATIONS[impl](x, f, ALL_ORDERS)
    assert torch.allclose(ours, torchvision_jitter(x, f, ALL_ORDERS), atol=5e-6)


@pytest.mark.parametrize("impl", sorted(JITTER_IMPLEMENTATIONS))
@pytest.mark.parametrize("step", range(4))
def test_color_jitter_steps_one_at_a_time_match_torchvision(impl, step):
    x = colourful_images(6, h=10, w=10)
    order = torch.tensor([step] + [s for s in range(4) if s != step]).expand(6, 4)  # the step first
    for value in ((0.3, 0.8, 1.5) if step < 3 else (-0.3, 0.05, 0.45)):
        f = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(6, 1)
        f[:, step] = value
        ours = JITTER_IMPLEMENTATIONS[impl](x, f, order)
        assert torch.allclose(ours, TV_STEPS[step](x, value), atol=5e-6), value


@pytest.mark.parametrize("impl", sorted(JITTER_IMPLEMENTATIONS))
def test_color_jitter_on_gray_images_only_changes_brightness_and_contrast(impl):
    x = images(24, c=1)
    f = torch.tensor([1.3, 0.7, 0.2, 0.4]).expand(24, 4)
    ours = JITTER_IMPLEMENTATIONS[impl](x, f, ALL_ORDERS)
    assert torch.allclose(ours, torchvision_jitter(x, f, ALL_ORDERS), atol=1e-6)
    saturation_and_hue_only = torch.tensor([1.0, 1.0, 0.2, 0.4]).expand(24, 4)
    assert torch.equal(JITTER_IMPLEMENTATIONS[impl](x, saturation_and_hue_only, ALL_ORDERS), x)
    out, _ = run(SPECS["color_jitter"], x, torch.zeros(24, dtype=torch.long), 2)
    assert not torch.equal(out, x)


@pytest.mark.parametrize("impl", sorted(JITTER_IMPLEMENTATIONS))
def test_color_jitter_identity_factors_keep_every_bit_and_uint8_reads_as_pixel_over_255(impl):
    x = colourful_images(24)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(24, 4)
    assert torch.equal(JITTER_IMPLEMENTATIONS[impl](x, identity, ALL_ORDERS), x)
    pixels = torch.randint(0, 256, (24, 3, 5, 6), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    f = torch.tensor([1.2, 0.7, 1.3, 0.2]).expand(24, 4)
    as_floats = pixels.to(torch.float32).div_(255)
    jitter = JITTER_IMPLEMENTATIONS[impl]
    assert torch.equal(jitter(pixels, f, ALL_ORDERS), jitter(as_floats, f, ALL_ORDERS))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 12), c=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_color_jitter_cpu_kernel_agrees_with_the_torch_version(b, c, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, 6, 5, generator=gen)
    f = torch.cat([2 * torch.rand(b, 3, generator=gen), torch.rand(b, 1, generator=gen) - 0.5], 1)
    order = torch.rand(b, 4, generator=gen).argsort(1)
    assert torch.allclose(augment_cpu.color_jitter(x, f, order), color_jitter_torch(x, f, order), atol=5e-6)


def test_color_jitter_draws_its_order_and_factors_per_image(monkeypatch):
    import zoo.plugins.augmentations as module

    seen = {}

    def spy(x, factors, order):
        seen.update(factors=factors, order=order)
        return color_jitter_batch(x, factors, order)

    monkeypatch.setattr(module, "color_jitter_batch", spy)
    run({"name": "color_jitter", "brightness": 0.4, "contrast": 0.3, "saturation": 0.2, "hue": 0.1},
        images(400), torch.zeros(400, dtype=torch.long), 2)
    order, factors = seen["order"], seen["factors"]
    assert torch.equal(order.sort(1).values, torch.arange(4).expand(400, 4))  # a permutation per image
    assert len(torch.unique(order, dim=0)) == 24  # all orders occur: drawn per image, not per batch
    for k, (low, high) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert low <= factors[:, k].min() and factors[:, k].max() <= high
        assert factors[:, k].max() - factors[:, k].min() > 0.9 * (high - low)
        assert len(torch.unique(factors[:, k])) == 400


# --- geometry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "angle, shift, scale, shear",
    [(30, (0, 0), 1.0, 0), (0, (3, -2), 1.0, 0), (0, (0, 0), 0.7, 0), (0, (0, 0), 1.0, 20),
     (25, (2, 1), 1.2, 10)],
)
def test_affine_is_torchvisions_map(angle, shift, scale, shear):
    x = torch.zeros(1, 1, 15, 21)
    x[0, 0, 3:6, 4:12] = 1  # off-centre and non-square, so any wrong sign or axis shows
    ours = affine_batch(
        x, torch.tensor([float(angle)]), torch.tensor([shift], dtype=torch.float32),
        torch.tensor([scale]), torch.tensor([float(shear)]), "nearest",
    )
    theirs = TF.affine(x, angle=angle, translate=list(shift), scale=scale, shear=[float(shear), 0.0])
    assert torch.equal(ours, theirs)


def test_affine_zero_parameters_keep_the_image():
    x = images(3)
    zeros = torch.zeros(3)
    out = affine_batch(x, zeros, torch.zeros(3, 2), torch.ones(3), zeros)
    assert torch.allclose(out, x, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), side=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cutout_zeroes_one_square_clipped_at_the_borders(b, side, seed):
    x = 0.5 + 0.5 * images(b, h=10, w=10, seed=seed)  # no zeros of its own
    out, _ = run({"name": "cutout", "size": side}, x, torch.zeros(b, dtype=torch.long), 2, seed)
    zero = out[:, 0] == 0
    assert torch.equal(zero[:, None].expand_as(out), out == 0)  # all channels alike
    for i in range(b):
        rows, cols = zero[i].any(1).nonzero().flatten(), zero[i].any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        assert zero[i].sum() == len(rows) * len(cols)  # a rectangle
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
        for found, size in ((rows, 10), (cols, 10)):
            clipped = found[0] == 0 or found[-1] == size - 1
            assert len(found) == side or (clipped and len(found) < side)


def test_cutout_size_is_pixels_for_an_int_and_a_fraction_for_a_float():
    x = 0.5 + 0.5 * images(64, h=16, w=16)
    labels = torch.zeros(64, dtype=torch.long)
    for size, side in ((3, 3), (0.25, 4)):
        out, _ = run({"name": "cutout", "size": size}, x, labels, 2)
        assert (out[:, 0] == 0).flatten(1).sum(1).max() == side * side


# --- cowmix ------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), h=st.integers(2, 16), w=st.integers(2, 16), seed=st.integers(0, 2**16))
def test_cow_mask_keeps_exactly_the_drawn_share(b, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    proportion = torch.rand(b, generator=gen)
    sigma = 0.5 + 8 * torch.rand(b, generator=gen)
    mask = cow_mask(proportion, sigma, h, w, gen)
    assert mask.shape == (b, 1, h, w) and mask.dtype == torch.bool
    assert torch.equal(mask.flatten(1).sum(1), torch.round(proportion * h * w).long())


def test_cow_mask_blob_size_follows_sigma_per_sample():
    def edges(mask):  # neighbouring pixels that disagree: many for fine noise, few for smooth blobs
        m = mask[:, 0].float()
        return (m.diff(dim=1).abs().sum((1, 2)) + m.diff(dim=2).abs().sum((1, 2))).float()

    gen = torch.Generator().manual_seed(0)
    sigma = torch.tensor([0.7, 6.0] * 16)  # alternating within one batch
    mask = cow_mask(torch.full((32,), 0.5), sigma, 32, 32, gen)
    fine, smooth = edges(mask)[0::2], edges(mask)[1::2]
    assert fine.min() > 2 * smooth.max()


def test_cowmix_on_tiny_images_still_makes_blobs():
    x, _ = constant_images(2, h=8, w=8)
    x = x[[0, 1] * 32]
    out, y = run({"name": "cowmix", "proportion": [0.5, 0.5]}, x, torch.tensor([0, 1] * 32), 2)
    mixed = (y.max(1).values < 1)
    assert mixed.any()
    assert torch.allclose(y[mixed].max(1).values, torch.tensor(0.5))


# --- random draws and specs --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_sampler_has_the_beta_moments_and_follows_the_generator(alpha):
    draws = sample_beta(alpha, 20_000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws.mean() - 0.5) < 0.01
    assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
    again = sample_beta(alpha, 20_000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(draws, again)


def test_bad_ranges_and_sizes_fail_validation():
    for spec in (
        {"name": "cowmix", "proportion": [0.8, 0.2]},
        {"name": "affine", "scale": [1.2, 0.8]},
        {"name": "affine", "scale": [0, 1]},
        {"name": "cowmix", "proportion": [0.5, 1.5]},
        {"name": "cowmix", "sigma": [0, 4]},
        {"name": "cutout", "size": 0},
        {"name": "color_jitter", "hue": 0.7},
        {"name": "mixup", "alpha": 0},
    ):
        with pytest.raises(RegistryError):
            zoo.augmentations.validate(spec)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_augmentation_cites_its_paper(name):
    entry = zoo.augmentations.get(name)
    doc = entry.obj.__doc__
    assert entry.summary and len(doc.strip().splitlines()) >= 3  # a summary line, then the math
    assert re.search(r"\(([A-Z][\w-]+( et al\.| & [A-Z][\w-]+)?) (19|20)\d\d\b", entry.summary + doc)


def test_all_together_in_one_pipeline_on_a_batch_of_one():
    steps = [SPECS[name] for name in sorted(SPECS)]
    out, y = AugmentPipeline(steps, 10, seed=1)(images(1), torch.tensor([3]))
    assert out.shape == (1, 3, 8, 8)
    assert torch.equal(y, torch.nn.functional.one_hot(torch.tensor([3]), 10).float())


def test_mixup_keeps_the_shape_of_flat_inputs():
    # mixup says images_only = False; it used to broadcast (B, F) features into (B, 1, B, F)
    pipe = AugmentPipeline([{"name": "mixup", "alpha": 1.0}], num_classes=3, seed=0)
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(1))
    out, y = pipe(x, torch.arange(6) % 3)
    assert out.shape == (6, 5) and y.shape == (6, 3)
    assert torch.allclose(y.sum(1), torch.ones(6))
    # each output row is a blend of its own row and one partner row, by the target's weights
    lam = y.max(1).values
    assert ((out - x).abs().sum(1) > 0).any() and torch.all(lam >= 1 / 3)
# --- the pipeline's fusion: never a different value -------------------------------------------------

GEOMETRIC_CHAINS = [
    [{"name": "flip"}, {"name": "crop", "padding": 3}],
    [{"name": "crop", "padding": 2}, {"name": "flip", "vertical": True}, {"name": "crop", "padding": 3}],
    [{"name": "crop", "padding": 2, "mode": "reflect"}, {"name": "flip", "p": 0.3},
     {"name": "crop", "padding": 1, "mode": "circular"}, {"name": "crop", "padding": 2, "mode": "replicate"}],
]


@pytest.mark.parametrize("chain", GEOMETRIC_CHAINS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_consecutive_geometric_steps_fuse_into_one_map_with_the_same_result(chain, dtype, path):
    x = torch.randint(0, 256, (64, 3, 7, 9), generator=torch.Generator().manual_seed(0)).to(dtype)
    pipe = AugmentPipeline(chain, 2, seed=5)
    assert len(pipe._stages) == 1  # one stage: the composed map
    fused, _ = pipe(x, torch.zeros(64, dtype=torch.long), dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    one_by_one = x
    for step in pipe.steps:
        one_by_one, _ = step(one_by_one, None, gen)
    assert one_by_one.dtype == dtype  # geometry never converts
    assert torch.equal(fused, one_by_one.to(torch.float64) / (255 if dtype == torch.uint8 else 1))
    assert torch.equal(pipe.generator(x.device).get_state(), gen.get_state())  # the same draws, no more


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 6),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    fills=st.booleans(),
    shifts=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pixel_map_cpu_kernel_agrees_with_the_torch_gather(b, h, w, fills, shifts, seed):
    gen = torch.Generator().manual_seed(seed)
    outside = 3 if fills else 0  # indices up to 3 past either edge
    if shifts:  # (mirrored) shifts: the kernel copies runs of each row instead of gathering
        def axis(size):
            index = torch.arange(size) + torch.randint(-outside, outside + 1, (b, 1), generator=gen)
            flipped = torch.rand(b, 1, generator=gen) < 0.5
            return torch.where(flipped, index.flip(1), index)

        rows, cols = axis(h), axis(w)
    else:
        rows = torch.randint(-outside, h + outside, (b, h), generator=gen)
        cols = torch.randint(-outside, w + outside, (b, w), generator=gen)
    for dtype in (torch.uint8, torch.float32):
        x = torch.randint(1, 256, (b, 2, h, w), generator=gen).to(dtype)
        ours = augment_cpu.apply_pixel_map(x, rows, cols)
        assert torch.equal(ours, gather_pixels(x, rows, cols, fills))
        for i in range(b):  # and both are the definition
            for r in range(h):
                for c in range(w):
                    inside = 0 <= rows[i, r] < h and 0 <= cols[i, c] < w
                    expected = x[i, :, rows[i, r], cols[i, c]].tolist() if inside else [0, 0]
                    assert ours[i, :, r, c].tolist() == expected


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 7), h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_box_paste_cpu_kernel_agrees_with_the_torch_version(b, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    partner = torch.randperm(b, generator=gen)
    rows = torch.sort(torch.randint(0, h + 1, (b, 2), generator=gen), 1).values
    cols = torch.sort(torch.randint(0, w + 1, (b, 2), generator=gen), 1).values
    box = rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1]
    for x in (torch.rand(b, 3, h, w, generator=gen), torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)):
        assert torch.equal(augment_cpu.paste_boxes(x, partner, *box), paste_boxes(x, partner, *box))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_uint8_batches_give_the_float_result(name, path):
    # the pipeline keeps uint8 through steps that only move pixels, or lets a step read it: never a change
    gen = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (16, 3, 10, 10), generator=gen).to(torch.uint8)
    labels = torch.arange(16) % 4
    steps = [{"name": "flip"}, SPECS[name], {"name": "crop", "padding": 2}]
    from_uint8, y8 = AugmentPipeline(steps, 4, seed=3)(pixels, labels)
    from_float, yf = AugmentPipeline(steps, 4, seed=3)(pixels.to(torch.float32) / 255, labels)
    assert from_uint8.dtype == torch.float32
    assert torch.equal(from_uint8, from_float) and torch.equal(y8, yf)


def test_pipeline_returns_the_dtype_asked_for(path):
    pixels = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    for steps in ([], [{"name": "flip"}], [{"name": "color_jitter"}], [{"name": "mixup"}]):
        out, y = AugmentPipeline(steps, 3)(pixels, torch.zeros(4, dtype=torch.long), dtype=torch.float64)
        assert out.dtype == torch.float64 and y.dtype == torch.float64
    out, _ = AugmentPipeline([{"name": "flip", "p": 0.0}], 3)(pixels, torch.zeros(4, dtype=torch.long))
    assert torch.equal(out, pixels.to(torch.float32).div_(255))


def test_cpu_kernels_leave_torchs_thread_count_alone():
    # numba's OpenMP pool, started by the first kernel, would reset the process's count; a fresh process
    # is the only place where that first start is sure to happen inside this test
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from zoo.data.augment import AugmentPipeline\n"
        "steps = [{'name': 'flip'}, {'name': 'color_jitter'}, {'name': 'cutmix'}]\n"
        "x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)\n"
        "AugmentPipeline(steps, 3)(x, torch.zeros(4, dtype=torch.long))\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]


def test_results_handed_out_are_never_scratch_that_the_next_batch_overwrites(path):
    from zoo.data.augment import BatchAugmentation

    class PassThrough(BatchAugmentation):  # a last step that returns its input as it is
        def __call__(self, x, y, generator):
            return x, y

    labels = torch.zeros(32, dtype=torch.long)
    for steps, tail in (([{"name": "flip"}, {"name": "color_jitter"}, {"name": "cutmix"}], None),
                        ([{"name": "crop"}, {"name": "color_jitter"}], PassThrough())):
        pipe = AugmentPipeline(steps, 2)
        if tail is not None:
            pipe._stages.append(tail)
        first, _ = pipe(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), labels)
        kept = first.clone()
        second, _ = pipe(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), labels)
        assert torch.equal(first, kept) and not torch.equal(first, second)


def test_pipeline_gives_torch_back_its_thread_count_even_when_a_step_fails(path):
    from zoo.data.augment import BatchAugmentation

    seen = []

    class Probe(BatchAugmentation):  # a step with compiled loops: torch's ops in it run on one thread
        compiled_on_cpu = True

        def __call__(self, x, y, generator):
            seen.append(torch.get_num_threads())
            raise RuntimeError("broken step")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = AugmentPipeline([{"name": "flip"}, {"name": "color_jitter"}, {"name": "cutmix"}], 2)
        pipe(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.zeros(32, dtype=torch.long))
        assert torch.get_num_threads() == 2
        pipe._stages.append(Probe())
        with pytest.raises(RuntimeError, match="broken step"):
            pipe(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.zeros(32, dtype=torch.long))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
