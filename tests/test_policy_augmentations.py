"""RandAugment, TrivialAugment, AutoAugment and random erasing against the libraries they reproduce
(torchvision's classes, timm's RandomErasing), per sample on batches."""

from __future__ import annotations

import pytest
import torch
from timm.data import random_erasing as timm_erasing
from torchvision.transforms import v2

from zoo.cli.main import main
from zoo.core.catalog import augmentations
from zoo.core.errors import ZooError
from zoo.core.recipe import load
from zoo.data.augment import AugmentPipeline, contract_problem
from zoo.plugins.augmentations_policies import NO_OP, apply_ops, draw_erasing, erase_boxes
from zoo.training.classifier import Classifier

POLICIES = {
    "randaugment": ({"name": "randaugment"}, lambda: v2.RandAugment()),
    "trivialaugment": ({"name": "trivialaugment"}, lambda: v2.TrivialAugmentWide()),
    "autoaugment-imagenet": ({"name": "autoaugment"}, lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)),
    "autoaugment-cifar10": (
        {"name": "autoaugment", "policy": "cifar10"}, lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    ),
    "autoaugment-svhn": (
        {"name": "autoaugment", "policy": "svhn"}, lambda: v2.AutoAugment(v2.AutoAugmentPolicy.SVHN)
    ),
}


def images(n: int, c: int = 3, h: int = 12, w: int = 14, seed: int = 0) -> torch.Tensor:
    """uint8 images with structure (a gradient plus noise), so that every operation changes them."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 160, h * w).view(1, 1, h, w)
    return (ramp + torch.randint(0, 96, (n, c, h, w), generator=gen)).to(torch.uint8)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_each_sample_gets_what_torchvision_gives_it_for_its_own_operations(policy, monkeypatch):
    """torchvision's class, run image by image, is recorded (which operations at which magnitudes); the
    batched apply_ops given those per-sample operations reproduces its pixels exactly."""
    spec, make = POLICIES[policy]
    step = augmentations.build(spec, "augment[0]")
    x = images(28)
    table = step.table(*x.shape[-2:])
    reference, calls = make(), []
    original = type(reference)._apply_image_or_video_transform

    def recording(self, image, name, magnitude, **kwargs):
        calls[-1].append((name, magnitude))
        return original(self, image, name, magnitude, **kwargs)

    torch.manual_seed(0)
    expected = []
    with monkeypatch.context() as patch:
        patch.setattr(type(reference), "_apply_image_or_video_transform", recording)
        for image in x:
            calls.append([])
            expected.append(reference(image))
    rounds = max(len(c) for c in calls)
    out = x
    for r in range(rounds):
        op = torch.tensor([table.names.index(c[r][0]) if r < len(c) else NO_OP for c in calls])
        magnitude = torch.tensor([c[r][1] if r < len(c) else 0.0 for c in calls], dtype=torch.float64)
        # the magnitudes torchvision drew are entries of the table the batched version draws from
        known = table.magnitudes[op.clamp_min(0)]
        assert ((known == magnitude.abs()[:, None]).any(1) | (op == NO_OP)).all()
        out = apply_ops(out, op, magnitude, table.names, step.policy)
    assert torch.equal(out, torch.stack(expected))
    pairs = {tuple(call) for c in calls for call in c}
    assert sum(len(c) for c in calls) > len(pairs)  # some operations ran as sub-batches of several samples


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment-imagenet"])
def test_policy_draws_are_per_sample_and_floats_are_uint8_pixels(policy):
    step = augmentations.build(POLICIES[policy][0], "augment[0]")
    gen, cpu = torch.Generator().manual_seed(1), torch.device("cpu")
    table, rounds = step.draws(torch.Size((600, 3, 32, 32)), gen, cpu)
    op, magnitude = rounds[-1]
    counts = torch.bincount(op[op != NO_OP], minlength=len(table.names))
    if policy != "autoaugment-imagenet":  # every operation, near uniformly (36 expected of 600 each, sd 6)
        assert len(table.names) == 14 and counts.min() > 12 and counts.max() < 75
    else:  # the ImageNet policy's second steps use rotate, equalize, solarize, ... : several of them
        assert (counts > 0).sum() >= 5
    known = op.clamp_min(0)
    signed = table.signed[known] & (table.magnitudes[known].abs().amax(1) > 0) & (op != NO_OP)
    share_negative = (magnitude[signed] < 0).double().mean()
    assert 0.4 < share_negative < 0.6
    # float pixels read on the 8-bit grid: the float result is the uint8 result / 255, value for value
    x = images(32, h=16, w=16)
    y = torch.zeros(32, 10)
    as_uint8, _ = step(x, y, torch.Generator().manual_seed(2))
    as_float, _ = step(x.float() / 255, y, torch.Generator().manual_seed(2))
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_float, as_uint8.float() / 255)
    assert (as_uint8 != x).flatten(1).any(1).float().mean() > 0.5


def test_random_erasing_equals_timm_on_the_same_boxes_and_noise(monkeypatch):
    """timm's RandomErasing on the standardized batch, its random draws replaced by ours, against zoo's on the
    pixels then standardized: the same boxes, filled with the same standard-normal values."""
    mean = torch.tensor([0.49, 0.48, 0.45]).view(3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26]).view(3, 1, 1)
    x = torch.rand(48, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    for mode in ("pixel", "rand", "const"):
        step = augmentations.build(
            {"name": "random_erasing", "p": 0.6, "max_count": 3, "mode": mode, "min_area": 0.05,
             "max_area": 0.8},
            "augment[0]",
        )
        step.set_input_stats(mean, std)
        d = step.draws(x.shape, torch.Generator().manual_seed(3), x.device)
        gen = torch.Generator().manual_seed(3)
        ours, _ = step(x, torch.zeros(48, 10), gen)
        # the standard-normal fill ours used, drawn after the boxes for the erased samples alone
        gen = torch.Generator().manual_seed(3)
        step.draws(x.shape, gen, x.device)
        rows = d.erase.nonzero()[:, 0]
        z = step.standard_fill((len(rows), 3, 20, 24), gen, x.device)
        script = {"random": [], "randint": [], "uniform": [], "pixels": []}
        for b in range(48):
            script["random"].append(0.0 if d.erase[b] else 1.0)
            if not d.erase[b]:
                continue
            script["randint"].append(int(d.count[b]))
            row = int((rows == b).nonzero()[0, 0])
            for k in range(int(d.count[b])):
                taken = int(d.taken[b, k])
                for t in range(taken + 1 if taken >= 0 else 10):
                    script["uniform"] += [float(d.area[b, k, t]), float(d.log_aspect[b, k, t])]
                if taken >= 0:
                    top, left = int(d.top[b, k]), int(d.left[b, k])
                    script["randint"] += [top, left]
                    hh, ww = int(d.height[b, k]), int(d.width[b, k])
                    if mode == "pixel":
                        noise = z[row, 0, :, top:top + hh, left:left + ww]
                    else:  # a colour per box, zero for const
                        noise = z[row, k] if mode == "rand" else torch.zeros(3, 1, 1)
                    script["pixels"].append(noise.expand(3, hh, ww))

        class Scripted:
            @staticmethod
            def random():
                return script["random"].pop(0)

            @staticmethod
            def randint(low, high):
                return script["randint"].pop(0)

            @staticmethod
            def uniform(low, high):
                return script["uniform"].pop(0)

        monkeypatch.setattr(timm_erasing, "random", Scripted)
        monkeypatch.setattr(timm_erasing, "_get_pixels", lambda *args, **kwargs: script["pixels"].pop(0))
        timm_step = timm_erasing.RandomErasing(
            0.6, min_area=0.05, max_area=0.8, mode=mode, max_count=3, device="cpu"
        )
        expected = timm_step(((x - mean) / std).clone())
        assert not any(script.values())  # timm used every draw, no more
        assert torch.allclose((ours - mean) / std, expected, atol=1e-5), mode
        changed = (ours != x).flatten(1).any(1)
        assert changed.float().mean() > 0.3 and len(set(d.top[changed, 0].tolist())) > 3


def test_random_erasing_probability_and_noise_in_the_standardized_space():
    mean, std = torch.tensor([0.3]).view(1, 1, 1), torch.tensor([0.2]).view(1, 1, 1)
    step = augmentations.build({"name": "random_erasing"}, "augment[0]")  # p = 0.25, one box, pixel noise
    step.set_input_stats(mean, std)
    x = torch.full((2000, 1, 16, 16), 2.0)  # outside what the noise gives, so every erased pixel shows
    out, _ = step(x, torch.zeros(2000, 10), torch.Generator().manual_seed(0))
    erased = out != x
    share = erased.flatten(1).any(1).float().mean()
    assert 0.21 < share < 0.29  # p = 0.25 over 2,000 images: sd 0.01
    z = (out[erased] - mean.flatten()) / std.flatten()
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03  # N(0, 1) where the model looks
    for edge in (erased[:, 0, 0, :], erased[:, 0, -1, :], erased[:, 0, :, 0], erased[:, 0, :, -1]):
        assert edge.any()  # boxes are placed anywhere they fit, up to every border
    area = erased.flatten(1).float().mean(1)[erased.flatten(1).any(1)]
    assert 0.02 - 0.01 < area.min() and area.max() < 1 / 3 + 0.05


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment", "random_erasing"])
def test_p_zero_leaves_every_sample_and_the_contract_holds(name):
    x = images(32, h=16, w=16)
    step = augmentations.build({"name": name, "p": 0.0}, "augment[0]")
    if name == "random_erasing":  # it takes float pixels, the pipeline converting uint8 before it
        x = x.float()
    out, _ = step(x, torch.zeros(32, 10), torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    for shape in ((3, 32, 32), (1, 8, 8)):
        assert contract_problem(augmentations.build({"name": name}, "augment[0]"), shape, 10) is None


def test_policy_probability_is_each_samples_chance():
    step = augmentations.build({"name": "trivialaugment", "p": 0.3}, "augment[0]")
    _, rounds = step.draws(torch.Size((2000, 3, 8, 8)), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0.27 < (rounds[0][0] != NO_OP).float().mean() < 0.33  # sd 0.01


def test_erase_boxes_later_boxes_over_earlier_ones():
    x = torch.zeros(1, 1, 4, 4)
    box = lambda *v: torch.tensor([v])  # noqa: E731 - (1, K) box coordinates
    fill = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1, 1)
    out = erase_boxes(x, box(0, 1), box(0, 1), box(2, 2), box(2, 2), fill)
    assert out[0, 0].tolist() == [[1, 1, 0, 0], [1, 2, 2, 0], [0, 2, 2, 0], [0, 0, 0, 0]]
    d = draw_erasing(3, 4, 4, torch.tensor([True, False, True]), (0.5, 0.5), (1.0, 1.0), 1, torch.Generator())
    assert d.height.tolist() == [[3], [0], [3]]  # round(sqrt(0.5 * 16)) = 3 < 4 fits; unchosen: empty


def test_listed_with_their_docs_given_the_models_statistics_and_mistakes_named(capsys):
    assert main(["list", "augmentations"]) == 0
    listed = capsys.readouterr().out
    for line in ("RandAugment: num_ops operations per image", "TrivialAugment Wide: one operation per image",
                 "AutoAugment: one of 25 learned sub-policies", "Random erasing: boxes of each image"):
        assert line in listed
    # the pipeline hands random erasing the standardization the model applies after it
    pipeline = AugmentPipeline([{"name": "flip"}, {"name": "random_erasing", "mode": "const", "p": 1.0}], 10)
    pipeline.set_input_stats(torch.tensor([0.25]), torch.tensor([0.5]))
    out, _ = pipeline(torch.ones(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    assert ((out == 1) | (out == 0.25)).all() and (out == 0.25).any()  # const: the mean, 0 once standardized
    recipe = load(None, ["model.width=8", "model.depth=1", "augment=[{name: random_erasing}]"]).to_dict()
    module = Classifier(recipe, (1, 8, 8), 10)
    module.set_input_stats(torch.tensor([0.3]), torch.tensor([0.2]))  # as training does with the data's
    erasing = module.augment.steps[0]
    assert torch.equal(erasing.mean, torch.full((1, 8, 8), 0.3))
    assert torch.equal(erasing.std, torch.full((1, 8, 8), 0.2))
    with pytest.raises(ZooError, match=r"augment\[0\]: .*magnitude 31 must be below num_magnitude_bins"):
        augmentations.build({"name": "randaugment", "magnitude": 31}, "augment[0]")
