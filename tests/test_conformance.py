"""The conformance kit (zoo.testing) over every built-in component: all of them pass, so they are the examples.

Data sets that read files get small stand-ins: MNIST-format idx files and an image folder. CIFAR-10
and CIFAR-100 cannot be faked (torchvision checks their files' checksums), so those two are the only
components the kit cannot build here, for want of data: a component it never built fails its `builds`
check (nothing of it was checked), and every check after that is skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streaming_data import prepared
from torch import nn

import zoo
from zoo.core.registry import REGISTRIES
from zoo.testing import CHECKS, Case, cases_of, check_component, parametrize_with_checks, run_checks

NO_DATA_HERE = {"cifar10", "cifar100"}


def idx_files(raw: Path, per_class: int = 10, test_per_class: int = 3) -> None:
    """MNIST's four idx files (train and test images and labels), 28x28, 10 classes, random pixels."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class * 10), ("t10k", test_per_class * 10)):
        labels = np.arange(n, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + pixels.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())


def image_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee", "cat"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data_params(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("data")
    idx_files(root / "MNIST" / "raw")
    idx_files(root / "FashionMNIST" / "raw")
    folder = image_folder(root / "images")
    streamed = prepared(root / "prepared", {"train": 12, "val": 6, "test": 6})
    return {"mnist": {"root": str(root)}, "fashion_mnist": {"root": str(root)}, "imagefolder": {"root": str(folder)},
            "streaming": {"root": str(streamed), "num_workers": 0}}


@pytest.mark.parametrize("registry", sorted(REGISTRIES), ids=str)
def test_every_builtin_passes_every_check_that_applies(registry, data_params):
    cases = [c for c in cases_of("zoo") if c.registry == registry]
    assert cases, registry
    failed, unbuilt, skipped = [], set(), set()
    for case in cases:
        params = data_params.get(case.name, case.params) if registry == "datasets" else case.params
        for result in run_checks(case.registry, case.name, params):
            if result.failed and result.check == "builds" and "nothing could be checked" in result.detail:
                unbuilt.add(case.name)
            elif result.failed:
                failed.append(f"{case} {result.check}: {result.detail}")
            elif result.status == "skip":
                skipped.add(case.name)
    assert failed == []
    assert unbuilt == skipped == (NO_DATA_HERE if registry == "datasets" else set())


def test_the_builtins_are_all_there():
    names = {(c.registry, c.name.split(":")[-1]) for c in cases_of("zoo")}
    assert names == {(reg.name, e.name) for reg in REGISTRIES.values() for e in reg if e.origin.package == "zoo"}
    assert len(names) >= 60


def test_check_component_raises_naming_each_failed_check():
    def leaky_counter() -> nn.Module:
        """A ReLU shifted by how often it has been called: a different answer every call."""

        class Counting(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.calls = 0

            def forward(self, x):
                self.calls += 1
                return torch.relu(x) + self.calls  # a different answer every call

        return Counting()

    zoo.activations.register(leaky_counter, name="test_leaky_counter")
    try:
        with pytest.raises(AssertionError) as info:
            check_component("activations", "test_leaky_counter")
        message = str(info.value)
        assert message.startswith("activation 'test_leaky_counter' (")
        assert "deterministic [activations:test_leaky_counter]: two eval-mode forward passes on one input differ" in message
        assert "fails 1 check(s)" in message  # the other checks pass, and are not named
        results = check_component("activations", "relu")
        assert [r.check for r in results] == list(CHECKS) and all(r.status == "pass" for r in results)
    finally:
        zoo.activations.drop(zoo.activations.get("test_leaky_counter").source)


def test_examples_and_explicit_parameters_are_what_gets_checked():
    # step needs step_size; its registered example supplies one, and parameters given win
    assert [c.params for c in cases_of("zoo") if c.name == "step"] == [{"step_size": 2}]
    results = check_component("schedules", "step", step_size=3, gamma=0.5)
    assert {r.case.params["step_size"] for r in results} == {3}
    assert "lr 0.1 -> " in next(r.detail for r in results if r.check == "output")


@parametrize_with_checks([Case("activations", "gelu"), Case("augmentations", "mixup", {"alpha": 0.4})])
def test_the_pytest_helper_makes_one_case_per_component_and_check(case, check):
    check(case)


def test_the_pytest_helper_names_its_cases():
    mark = parametrize_with_checks([Case("activations", "gelu")])
    names = [f"{case}-{check.__name__}" for case, check in mark.args[1]]
    assert names == [f"activations:gelu-check_{c}" for c in CHECKS]
    with pytest.raises(ValueError, match="no components found for 'zoo-nothing-like-it'"):
        parametrize_with_checks("zoo-nothing-like-it")
