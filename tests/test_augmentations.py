"""Batch augmentations: shapes, per-sample randomness, exact geometry, and the pipeline's soft targets."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from zoo.augment import AugmentPipeline
from zoo.plugins.augmentations import translate_batch


def images(b=8, c=3, h=8, w=8, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 9),
    c=st.integers(1, 3),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    padding=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_translate_matches_pad_then_crop_per_image(b, c, h, w, padding, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=gen)
    dy = torch.randint(-padding, padding + 1, (b,), generator=gen)
    dx = torch.randint(-padding, padding + 1, (b,), generator=gen)
    out = translate_batch(x, dy, dx, padding)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
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
