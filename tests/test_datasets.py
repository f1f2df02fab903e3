"""The image data sets: synthetic, torchvision's (missing and from tiny fake copies), and image folders with their cache."""

from __future__ import annotations

import os
import pickle
import struct
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.core.errors import ComponentError

SHARED_CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpg.tar.gz"


# --- synthetic ----------------------------------------------------------------------------------------
def test_synthetic_shapes_dtypes_and_determinism():
    dm = zoo.datasets.build({"name": "synthetic", "n_train": 100, "n_val": 30, "n_test": 20, "num_classes": 4})
    assert (len(dm.train), len(dm.val), len(dm.test)) == (100, 30, 20)
    assert dm.train.x.dtype == torch.uint8 and dm.train.y.dtype == torch.long
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 4
    assert torch.bincount(dm.train.y).tolist() == [25] * 4
    assert dm.mean.shape == (3, 1, 1) and 0.3 < dm.mean.mean() < 0.7  # statistics on the [0, 1] scale
    again = zoo.datasets.build({"name": "synthetic", "n_train": 100, "n_val": 30, "n_test": 20, "num_classes": 4})
    assert torch.equal(again.train.x, dm.train.x) and torch.equal(again.test.y, dm.test.y)
    flat = zoo.datasets.build({"name": "synthetic", "shape": [16], "n_train": 10})
    assert flat.input_shape == (16,) and flat.mean.shape == (16,)
    with pytest.raises(zoo.ZooError, match="shape"):
        zoo.datasets.build({"name": "synthetic", "shape": [3, 0, 4]})


def test_synthetic_labels_are_learnable_and_signal_zero_is_not():
    def nearest_mean_accuracy(signal: float) -> float:
        dm = zoo.datasets.build({"name": "synthetic", "shape": [64], "signal": signal, "n_train": 500, "n_val": 500})
        x, v = dm.train.x.float(), dm.val.x.float()
        means = torch.stack([x[dm.train.y == c].mean(0) for c in range(dm.num_classes)])
        return (torch.cdist(v, means).argmin(1) == dm.val.y).float().mean().item()

    assert nearest_mean_accuracy(0.5) > 0.5  # chance is 0.1
    assert nearest_mean_accuracy(0.0) < 0.2


# --- torchvision data sets ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, folder",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
    ],
)
def test_torchvision_sets_missing_files_give_one_line(tmp_path, name, folder):
    with pytest.raises(zoo.ZooError) as err:
        zoo.datasets.build({"name": name, "root": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / folder) in message and "data.download=true" in message
    assert not any(tmp_path.iterdir())  # nothing was fetched or created


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    path.write_bytes(struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_format_loads_from_a_tiny_copy(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    test_images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    for prefix, n, images in (("train", 100, None), ("t10k", 20, test_images)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    dm = zoo.datasets.build({"name": name, "root": str(tmp_path)})
    assert (len(dm.train), len(dm.val), len(dm.test)) == (90, 10, 20)
    assert torch.bincount(dm.val.y).tolist() == [1] * 10  # stratified
    assert dm.train.x.dtype == torch.uint8 and dm.input_shape == (1, 28, 28)
    assert torch.equal(dm.test.x[:, 0], torch.from_numpy(test_images))
    assert dm.num_classes == 10 and dm.mean.shape == (1, 1, 1)
    assert dm.mean.item() == pytest.approx(dm.train.x.float().mean().item() / 255, abs=1e-4)


def test_cifar10_loads_from_a_tiny_pickle_copy(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    # The fake files cannot match torchvision's md5 sums of the real ones.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)  # rows: 1024 red, 1024 green, 1024 blue
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(10)) * 2}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    dm = zoo.datasets.build({"name": "cifar10", "root": str(tmp_path), "val_fraction": 0.2})
    assert (len(dm.train), len(dm.val), len(dm.test)) == (80, 20, 20)
    assert dm.classes == names and dm.input_shape == (3, 32, 32) and dm.train.x.dtype == torch.uint8
    assert torch.equal(dm.test.x, torch.from_numpy(batches["test_batch"]).view(20, 3, 32, 32))
    assert dm.mean.shape == (3, 1, 1)


# --- image folders ------------------------------------------------------------------------------------
def _imagefolder_module():
    # Through the registry, so the plugin is first imported by entry-point discovery, which records its source.
    return sys.modules[zoo.datasets["imagefolder"].obj.__module__]


CLASSES = ("cat", "dog", "emu")


def _image(seed: int, size: tuple[int, int] = (8, 8)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def _folder(root: Path, per_class: dict[str, int], ext: str = "png", seed: int = 0) -> Path:
    for part, n in per_class.items():
        for c, cls in enumerate(CLASSES):
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(seed + 1000 * c + i + (0 if part == "train" else 500)).save(root / part / cls / f"{i:03d}.{ext}")
    return root


def _pixels(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


@pytest.fixture
def folder(tmp_path):
    return _folder(tmp_path / "pets", {"train": 10, "test": 4})


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    module = _imagefolder_module()
    real = module.decode_file

    def counting(path, *args):
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(module, "decode_file", counting)
    return calls


def _caches(root: Path) -> list[Path]:
    return sorted(root.glob(".zoo-cache-*.pt"))


def test_imagefolder_classes_shapes_splits(folder):
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert dm.classes == list(CLASSES) and dm.num_classes == 3
    assert (len(dm.train), len(dm.val), len(dm.test)) == (27, 3, 12)
    assert torch.bincount(dm.val.y).tolist() == [1, 1, 1] and torch.bincount(dm.test.y).tolist() == [4, 4, 4]
    assert dm.train.x.dtype == torch.uint8 and dm.input_shape == (3, 8, 8)
    # the test split keeps file order, so its first image is test/cat/000.png, pixel for pixel (PNG is lossless)
    assert torch.equal(dm.test.x[0], _pixels(folder / "test" / "cat" / "000.png"))
    assert dm.mean.shape == (3, 1, 1)
    assert torch.allclose(dm.mean.flatten(), dm.train.x.float().mean((0, 2, 3)) / 255, atol=1e-5)


def test_imagefolder_classes_keeps_those_folders_labelled_in_their_order(folder, count_decodes):
    whole = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    count_decodes.clear()
    chosen = {"name": "imagefolder", "root": str(folder), "classes": ["emu", "cat"]}
    two = zoo.datasets.build(chosen)
    assert two.classes == ["emu", "cat"] and two.num_classes == 2
    assert (len(two.train) + len(two.val), len(two.test)) == (20, 8)
    assert torch.bincount(two.test.y).tolist() == [4, 4]
    # labels follow the list: emu (2 of the whole set) is 0, cat (0) is 1, with the same images
    assert torch.equal(two.test.x[two.test.y == 0], whole.test.x[whole.test.y == 2])
    assert torch.equal(two.test.x[two.test.y == 1], whole.test.x[whole.test.y == 0])
    # only the chosen folders are read, into a cache of their own that leaves the whole set's in place
    assert len(count_decodes) == 28 and not any(f"{os.sep}dog{os.sep}" in p for p in count_decodes)
    assert len(_caches(folder)) == 2
    count_decodes.clear()
    zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    again = zoo.datasets.build(chosen)
    assert count_decodes == [] and torch.equal(again.test.x, two.test.x)
    swapped = zoo.datasets.build({**chosen, "classes": ["cat", "emu"]})
    assert swapped.classes == ["cat", "emu"] and len(_caches(folder)) == 3
    assert torch.equal(swapped.test.x[swapped.test.y == 0], two.test.x[two.test.y == 1])


def test_imagefolder_limit_parts_limits_those_folders_alone(folder, count_decodes):
    limited = {"name": "imagefolder", "root": str(folder), "limit_per_class": 3, "val_fraction": 0.34}
    everywhere = zoo.datasets.build(limited)
    assert (len(everywhere.train), len(everywhere.val), len(everywhere.test)) == (6, 3, 9)
    count_decodes.clear()
    train_only = zoo.datasets.build({**limited, "limit_parts": ["train"]})
    assert (len(train_only.train), len(train_only.val), len(train_only.test)) == (6, 3, 12)
    assert torch.equal(train_only.train.x, everywhere.train.x)  # the same training subset
    assert len(count_decodes) == 21 and len(_caches(folder)) == 2  # a cache of its own, the other kept


def test_imagefolder_single_folder_is_carved_and_limit_is_seeded(tmp_path):
    root = _folder(tmp_path / "flat", {"train": 10})
    for cls in CLASSES:  # one folder of classes, no train/
        (root / "train" / cls).rename(tmp_path / "flat" / cls)
    (root / "train").rmdir()
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(root), "val_fraction": 0.2, "test_fraction": 0.3})
    assert (len(dm.train), len(dm.val), len(dm.test)) == (15, 6, 9)
    limited = {"name": "imagefolder", "root": str(root), "limit_per_class": 5, "cache": False}
    a, b = zoo.datasets.build(limited), zoo.datasets.build(limited)
    assert len(a.train) + len(a.val) + len(a.test) == 15
    assert torch.equal(a.train.x, b.train.x)
    other = zoo.datasets.build({**limited, "split_seed": 1})
    assert not torch.equal(torch.cat([a.train.x, a.val.x, a.test.x]), torch.cat([other.train.x, other.val.x, other.test.x]))
    with pytest.raises(zoo.ZooError, match="below 1"):
        zoo.datasets.build({"name": "imagefolder", "root": str(root), "val_fraction": 0.5, "test_fraction": 0.5})


def test_imagefolder_cache_is_written_then_reused_without_decoding(folder, monkeypatch):
    first = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(_caches(folder)) == 1
    assert not list(folder.glob(".zoo-cache-*.tmp"))

    def refuse(*args):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(_imagefolder_module(), "decode_file", refuse)
    second = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # other decode settings are another cache (the registry reports the factory's error as the component's)
    with pytest.raises(ComponentError, match="dataset 'imagefolder' .* failed to build: AssertionError: decoded"):
        zoo.datasets.build({"name": "imagefolder", "root": str(folder), "size": 4})


def test_imagefolder_cache_is_invalidated_when_a_file_changes(folder, count_decodes):
    zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(count_decodes) == 42
    changed = folder / "test" / "dog" / "001.png"
    _image(99).save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(count_decodes) == 84 and len(_caches(folder)) == 1  # rebuilt in place, not a second file
    assert torch.equal(dm.test.x[5], _pixels(changed))
    zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(count_decodes) == 84


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_shape"])
def test_imagefolder_damaged_cache_is_ignored_and_rebuilt(folder, count_decodes, damage):
    good = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    (cache,) = _caches(folder)
    if damage == "truncated":  # as if the process died mid-write without the atomic rename
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "garbage":
        cache.write_bytes(b"not a cache")
    else:  # a well-formed file with the right key but contents that do not match the folder
        blob = torch.load(cache, weights_only=True)
        blob["images"]["train"] = blob["images"]["train"][:-1]
        torch.save(blob, cache)
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(count_decodes) == 84
    assert torch.equal(dm.train.x, good.train.x) and torch.equal(dm.test.x, good.test.x)
    zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert len(count_decodes) == 84  # the rebuilt cache is good again


def test_imagefolder_corrupt_image_names_the_file(folder):
    bad = folder / "train" / "emu" / "007.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(zoo.ZooError, match=r"cannot decode .*emu/007\.jpg"):
        zoo.datasets.build({"name": "imagefolder", "root": str(folder)})
    assert not _caches(folder)


def test_imagefolder_missing_dir_and_no_classes(tmp_path):
    with pytest.raises(zoo.ZooError, match=f"no directory {tmp_path / 'nowhere'}"):
        zoo.datasets.build({"name": "imagefolder", "root": str(tmp_path / "nowhere")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(zoo.ZooError, match="no class folders"):
        zoo.datasets.build({"name": "imagefolder", "root": str(tmp_path / "empty")})


def test_imagefolder_mixed_sizes_need_size(folder):
    _image(5, size=(12, 10)).save(folder / "train" / "dog" / "big.png")
    with pytest.raises(zoo.ZooError, match=r"big\.png is 12x10 .*data\.size"):
        zoo.datasets.build({"name": "imagefolder", "root": str(folder), "cache": False})
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(folder), "size": [6, 5], "cache": False})
    assert dm.input_shape == (3, 6, 5)


def test_imagefolder_gray_jpeg_and_pillow_only_formats(tmp_path):
    root = _folder(tmp_path / "mixed", {"train": 6}, ext="jpg")
    _image(7).save(root / "train" / "cat" / "extra.bmp")  # torchvision.io cannot read BMP; Pillow can
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(root), "color": "gray", "test_fraction": 0.3})
    assert dm.input_shape == (1, 8, 8) and dm.train.x.dtype == torch.uint8
    assert len(dm.train) + len(dm.val) + len(dm.test) == 19


# --- the shared CIFAR-10 JPEGs ------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="no shared CIFAR-10 JPEG tarball next to the repository")
def test_shared_cifar10_jpegs_load_as_an_image_folder(tmp_path):
    # Writing all 60,000 files takes seconds; the first 30 of each class folder are plenty to subset.
    taken: Counter[str] = Counter()

    def first_per_class(tar: tarfile.TarFile):
        for member in tar:
            folder = os.path.dirname(member.name)
            if member.isdir() or (member.isfile() and taken[folder] < 30):
                taken[folder] += member.isfile()
                yield member

    with tarfile.open(SHARED_CIFAR) as tar:
        tar.extractall(tmp_path, members=first_per_class(tar), filter="data")
    root = next(p.parent for p in tmp_path.rglob("train") if p.is_dir())
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(root), "limit_per_class": 20})
    assert dm.num_classes == 10 and dm.classes[0] == "airplane" and dm.classes[-1] == "truck"
    assert dm.input_shape == (3, 32, 32) and dm.train.x.dtype == torch.uint8
    assert (len(dm.train), len(dm.val), len(dm.test)) == (180, 20, 200)
    mean = dm.train.x.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.05)
