"""Image folders: class subfolders of image files, decoded once into uint8 tensors, cached next to the data.

Decoding tens of thousands of small files is the slow part of reading such a set, so the decoded
tensors are saved in ``root/.zoo-cache-<settings>.pt`` together with a key: a hash of every file's
path, label, size and modification time plus the decode settings. A later load with the same key
reads the tensors back; a changed folder, a cache written by other settings, or a truncated or
tampered file fails validation and is rebuilt. The file is written to a temporary name and renamed,
so an interrupted write never leaves a half-written cache under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Union

from pydantic import Field
from typing_extensions import Annotated

from zoo import Seed, datasets
from zoo.core.errors import ZooError, did_you_mean
from zoo.core.io import MAX_IMAGE_BYTES, read_bytes, torch_load
from zoo.data.image_files import IMAGE_EXTENSIONS

Fraction = Annotated[float, Field(gt=0, lt=1)]
Positive = Annotated[int, Field(ge=1)]

CACHE_FORMAT = 1
PARTS = ("train", "val", "test")
# Files per task handed to a decoding thread: enough that scheduling costs little next to decoding.
CHUNK = 512


def _threads() -> int:
    # torchvision's decoder releases the GIL, so threads overlap decoding. Measured on a busy 2-core
    # machine, 50,000 CIFAR JPEGs took 6.6-8.4 s on one thread and 5.5-6.0 s on two; more threads
    # than cores gained nothing.
    from zoo.data.datamodule import usable_cores

    return max(1, min(8, usable_cores()))


def decode_file(path: str, color: str, size: tuple[int, int] | None):
    """One image file as a uint8 (C, H, W) tensor, C = 3 (``rgb``) or 1 (``gray``), resized to ``size`` (H, W).

    The file must be a regular file of at most MAX_IMAGE_BYTES; zoo.data.images.decode refuses a header
    that promises more pixels than Pillow allows before decoding it.
    """
    from zoo.data.images import decode, resize

    try:
        data = read_bytes(path, MAX_IMAGE_BYTES, "image file")
        img = decode(data, path, color)
    except ZooError as exc:
        raise ZooError(f"imagefolder: {exc}") from None
    return img if size is None else resize(img, size)


def decode_all(paths: list[str], color: str, size: tuple[int, int] | None):
    """The files as one uint8 (N, C, H, W) tensor; they must share one size unless ``size`` is set."""
    import torch

    first = decode_file(paths[0], color, size)
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    out[0] = first

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            img = decode_file(paths[i], color, size)
            if img.shape != first.shape:
                raise ZooError(
                    f"imagefolder: {paths[i]} is {img.shape[1]}x{img.shape[2]} but {paths[0]} is "
                    f"{first.shape[1]}x{first.shape[2]}; set data.size=[H, W] (or data.size=N) to resize them all"
                )
            out[i] = img

    ranges = [(lo, min(lo + CHUNK, len(paths))) for lo in range(1, len(paths), CHUNK)]
    threads = min(_threads(), len(ranges))
    if threads <= 1:
        for lo, hi in ranges:
            work(lo, hi)
        return out
    pool = ThreadPoolExecutor(threads)
    try:
        for future in [pool.submit(work, lo, hi) for lo, hi in ranges]:
            future.result()
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, queued chunks are not decoded for nothing
    return out


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path, seen: dict[str, str]) -> list[str]:
    """Image files under the class folder ``folder`` (any depth, links followed), as sorted paths relative to it.

    A linked folder inside it is followed only when it stays inside the class folder and leads somewhere
    not read yet: ``seen`` maps each real folder read so far to the path it was read by, across classes
    and parts. So a link back up (``loop -> .``, ``up -> ..``), to another class's folder or out of the
    class folder is refused, naming the link, instead of reading images twice or under the wrong label.
    (A class folder may itself be a link, and image files may link anywhere.) Anything under an image
    name that is not a regular file (a named pipe, a device) is refused too: reading it could block forever.
    """
    top = os.path.realpath(folder)
    found: list[str] = []
    stack = [folder]
    while stack:
        here = stack.pop()
        real = os.path.realpath(here)
        if real in seen:
            raise ZooError(
                f"imagefolder: {here} leads to {seen[real]} again (a link loop, or two ways to the same images); "
                "remove the link"
            )
        seen[real] = str(here)
        try:
            entries = list(os.scandir(here))
        except OSError as exc:
            raise ZooError(f"imagefolder: cannot read the folder {here}: {exc.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink() and entry.is_dir():
                target = os.path.realpath(path)
                if os.path.commonpath([real, target]) == target:
                    raise ZooError(f"imagefolder: {path} links back up to {target}, a loop: remove the link")
                if os.path.commonpath([top, target]) != top:
                    raise ZooError(
                        f"imagefolder: {path} links to {target}, outside its class folder {folder}: its images "
                        "would be read under the wrong class or twice; remove the link"
                    )
            if entry.is_dir():
                stack.append(path)
                continue
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            # is_file follows links to files, wherever they are; the directory entry answers it for the
            # others without a stat call
            if not entry.is_file():
                try:
                    os.stat(path)
                except OSError as exc:  # a link to nowhere
                    raise ZooError(f"imagefolder: cannot read {path}: {exc.strerror}") from None
                raise ZooError(f"imagefolder: {path} is not a regular file (a pipe or a device?); remove it")
            found.append(os.path.relpath(path, folder))
    return sorted(found)


def _scan(
    root: Path,
    limit_per_class: int | None,
    seed: int,
    chosen: list[str] | None = None,
    limit_parts: tuple[str, ...] = PARTS,
) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The class names and, per folder part, its (path relative to root, label) pairs.

    ``chosen`` keeps only those class folders, labelled 0..k-1 in its order; None keeps them all, sorted.
    ``limit_per_class`` applies to the folders of ``limit_parts`` alone.
    """
    import torch

    if (root / "train").is_dir():
        folders = {part: root / part for part in PARTS if (root / part).is_dir()}
    else:
        folders = {"train": root}  # one folder of classes: val and test are carved from it
    present = _subdirs(folders["train"])
    if not present:
        raise ZooError(
            f"imagefolder: {folders['train']} has no class folders; expected {root}/train/<class>/<image> "
            f"(and optionally val/, test/) or {root}/<class>/<image>"
        )
    classes = present if chosen is None else _chosen_classes(chosen, present, folders["train"])
    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, list[tuple[str, int]]] = {}
    seen: dict[str, str] = {}  # real folders read, across parts and classes (see _images)
    for part, folder in folders.items():
        stray = sorted(set(_subdirs(folder)) - set(present))
        if stray:
            raise ZooError(f"imagefolder: {folder / stray[0]} is a class {folders['train']} does not have")
        entries = []
        for label, cls in enumerate(classes):
            if not (folder / cls).is_dir():
                continue
            files = _images(folder / cls, seen)
            if not files and part == "train":
                raise ZooError(f"imagefolder: class folder {folder / cls} has no images")
            if limit_per_class is not None and part in limit_parts and len(files) > limit_per_class:
                keep = torch.randperm(len(files), generator=gen)[:limit_per_class].sort().values
                files = [files[i] for i in keep.tolist()]
            rel = os.path.relpath(folder / cls, root)
            entries += [(os.path.join(rel, f), label) for f in files]
        if entries:
            parts[part] = entries
    return classes, parts


def _chosen_classes(chosen: list[str], present: list[str], folder: Path) -> list[str]:
    """``chosen`` checked against the class folders ``present`` in ``folder``."""
    for name in chosen:
        if name not in present:
            raise ZooError(
                f"imagefolder: data.classes: {name!r} is not a class folder of {folder}"
                f"{did_you_mean(name, present)}; its class folders: {', '.join(present)}"
            )
    twice = sorted({name for name in chosen if chosen.count(name) > 1})
    if twice:
        raise ZooError(f"imagefolder: data.classes: {twice[0]!r} is listed twice; list each class once")
    return list(chosen)


def _key(root: Path, classes: list[str], parts: dict[str, list[tuple[str, int]]], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"settings": settings, "classes": classes}, sort_keys=True).encode())
    for part, entries in parts.items():
        digest.update(f"\0{part}".encode())
        for rel, label in entries:
            try:
                st = os.stat(root / rel)
            except OSError as exc:  # listed but gone, or a link to nowhere
                raise ZooError(f"imagefolder: cannot read {root / rel}: {exc.strerror}") from None
            digest.update(f"\0{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str, counts: dict[str, int], channels: int, size: tuple[int, int] | None):
    """The cached images per part if ``path`` holds a complete cache for ``key``, else None."""
    import torch

    if not path.exists():
        return None
    try:
        blob = torch_load(path, "decode cache")
    except Exception:  # truncated, corrupt, not a torch file at all, or not a regular file
        return None
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
        return None
    images = blob.get("images")
    if not isinstance(images, dict) or set(images) != set(counts):
        return None
    shapes = set()
    for part, n in counts.items():
        x = images[part]
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 4):
            return None
        if len(x) != n or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != size):
            return None
        shapes.add(tuple(x.shape[1:]))
    return images if len(shapes) == 1 else None


def _write_cache(path: Path, blob: dict) -> None:
    from zoo.core.io import atomic_torch_save

    try:
        atomic_torch_save(blob, path)  # two ranks may build the same cache at once: each its own temp file
    except OSError as exc:  # a read-only or full disk costs the next run a decode, not this run
        warnings.warn(f"imagefolder: could not write the decode cache {path}: {exc}", stacklevel=3)


# the conformance kit skips it (no such folder) unless given a root; tests give it one
@datasets.register("imagefolder", examples=[{"root": "data/images"}])
def imagefolder(
    *,
    root: str,
    size: Union[int, list[int], None] = None,
    color: Literal["rgb", "gray"] = "rgb",
    classes: Annotated[list[str], Field(min_length=1)] | None = None,
    limit_per_class: Positive | None = None,
    limit_parts: list[Literal["train", "val", "test"]] = list(PARTS),
    val_fraction: Fraction = 0.1,
    test_fraction: Fraction = 0.2,
    split_seed: Seed = 0,
    cache: bool = True,
    batch_size: Positive = 128,
    eval_batch_size: Positive = 1024,
    standardize: Literal["channel", "feature", "none"] = "channel",
):
    """Images in class subfolders (root/train/<class>/..., or root/<class>/...), decoded once and cached.

    With ``root/train`` present, ``root/val`` and ``root/test`` are used where they exist; a missing
    val or test part is carved from train by a stratified ``val_fraction`` / ``test_fraction`` drawn
    with ``split_seed``, as both are when ``root`` itself holds the class folders. Classes are the
    sorted subfolder names of the training folder, or ``classes``: those subfolders alone, labelled 0..k-1
    in the order given (a subset for transfer experiments, say); other folders are left unread. Images
    become uint8 tensors (``color``), 3 channels for ``rgb`` or 1 for ``gray``, resized to ``size`` (one
    number for square, or [H, W]) when given; without it all images must share one size. ``limit_per_class`` keeps a seeded random subset of that many
    images per class in each folder, for quick runs, or in the folders ``limit_parts`` names alone
    (``[train]``: few training images, the whole test folder). Decoded images are cached in
    ``root/.zoo-cache-*.pt`` (see the module docs); ``cache: false`` neither reads nor writes it.
    ``standardize`` takes statistics (per pixel: feature, per channel, or none) from the train part
    only; ``batch_size`` and ``eval_batch_size`` are the training and evaluation batch sizes.
    """
    import torch

    from zoo.data.datamodule import DataModule, Split, stratified_split

    top = Path(root).expanduser()
    if not top.is_dir():
        looked = "" if top.is_absolute() else f", looked at {top.resolve()}"
        what = "is a file, not a directory" if top.is_file() else "does not exist"
        raise ZooError(f"imagefolder: no directory {top} (data.root{looked}): it {what}")
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    if hw is not None and (len(hw) != 2 or min(hw) < 1):
        raise ZooError(f"imagefolder: size must be a positive N or [H, W], got {size}")
    classes, parts = _scan(top, limit_per_class, split_seed, classes, tuple(limit_parts))
    carve = [part for part in ("test", "val") if part not in parts]
    if carve == ["test", "val"] and val_fraction + test_fraction >= 1:
        total = val_fraction + test_fraction
        raise ZooError(f"imagefolder: val_fraction + test_fraction must be below 1, got {total}")

    # the class list is in the cache's name as well as its key: runs on different classes of one folder
    # keep a cache each instead of overwriting one another's
    settings = {
        "format": CACHE_FORMAT,
        "size": hw,
        "color": color,
        "limit_per_class": limit_per_class,
        "classes": classes,
    }
    if limit_per_class is not None:
        settings["split_seed"] = split_seed  # it picks the subset, so the subset's cache is its own
        settings["limit_parts"] = sorted(set(limit_parts))
    digest = hashlib.sha256(json.dumps({**settings, "parts": sorted(parts)}, sort_keys=True).encode())
    cache_path = top / f".zoo-cache-{digest.hexdigest()[:16]}.pt"
    counts = {part: len(entries) for part, entries in parts.items()}
    channels = 3 if color == "rgb" else 1

    images = None
    if cache:
        key = _key(top, classes, parts, settings)
        images = _read_cache(cache_path, key, counts, channels, hw)
    if images is None:
        images = {part: decode_all([str(top / rel) for rel, _ in items], color, hw) for part, items in parts.items()}
        if cache:
            _write_cache(cache_path, {"format": CACHE_FORMAT, "key": key, "images": images})

    labels = {part: torch.tensor([lab for _, lab in items], dtype=torch.long) for part, items in parts.items()}
    splits = {part: Split(images[part], labels[part]) for part in parts}
    if carve:
        pool = splits["train"]
        fractions = {"test": test_fraction, "val": val_fraction}
        rest, *taken = stratified_split(pool.y, [fractions[p] for p in carve], split_seed)
        for part, idx in zip(carve, taken):
            splits[part] = Split(pool.x[idx], pool.y[idx])
        splits["train"] = Split(pool.x[rest], pool.y[rest])
    _check_split_sizes(top, splits, carve, val_fraction, test_fraction)
    dm = DataModule.standardized(
        splits["train"],
        splits["val"],
        splits["test"],
        classes=classes,
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
    source = top / "train" if (top / "train").is_dir() else top
    for part in carve:
        fraction = {"test": test_fraction, "val": val_fraction}[part]
        dm.split_notes[part] = (
            f"there is no {top / part} folder: the {part} split is a seeded {fraction:.0%} of each class of "
            f"{source} (data.{part}_fraction, data.split_seed={split_seed})"
        )
    return dm


def _check_split_sizes(top: Path, splits: dict, carved: list[str], val_fraction: float, test_fraction: float):
    """Refuse a folder too small for its split, before a run starts on an empty validation or test set."""
    from zoo.core.build import check_split_sizes

    sizes = {part: len(splits[part]) for part in PARTS}
    if carved:
        # carved parts take a rounded share of every class, so a few images per class can round to none
        asked = {"val": f"val_fraction={val_fraction}", "test": f"test_fraction={test_fraction}"}
        fractions = " and ".join(asked[p] for p in reversed(carved))
        hint = f"{fractions} of each class round to too few images; add images or raise the fraction"
    else:
        hint = f"add images under {top}/<part>/<class>/"
    check_split_sizes(f"imagefolder: {top}", sizes, hint)
