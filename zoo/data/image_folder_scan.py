"""Which files of an image folder make which split, decided in one place for all that reads such folders.

The ``imagefolder`` data set decodes the files into memory; ``zoo data prepare`` writes them, undecoded,
as streamed chunks. Both call ``scan`` for the classes and the files of each folder part, and ``carve``
for the validation and test splits a folder lacks, so the same folder and settings give both the same
images in the same splits.

``who`` starts every message (the data set's name, or the command's) and ``classes_key`` names where the
class list came from (a recipe key or a command-line option), so a mistake is reported in the user's terms.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.core.errors import ZooError, did_you_mean
from zoo.data.image_files import is_image_name

PARTS = ("train", "val", "test")
Files = list[tuple[str, int]]  # (path relative to the root, label)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path, seen: dict[str, str], who: str) -> list[str]:
    """Image files under the class folder ``folder`` (any depth, links followed), sorted paths relative to it.

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
                f"{who}: {here} leads to {seen[real]} again (a link loop, or two ways to the same images); "
                "remove the link"
            )
        seen[real] = str(here)
        try:
            entries = list(os.scandir(here))
        except OSError as exc:
            raise ZooError(f"{who}: cannot read the folder {here}: {exc.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink() and entry.is_dir():
                target = os.path.realpath(path)
                if os.path.commonpath([real, target]) == target:
                    raise ZooError(f"{who}: {path} links back up to {target}, a loop: remove the link")
                if os.path.commonpath([top, target]) != top:
                    raise ZooError(
                        f"{who}: {path} links to {target}, outside its class folder {folder}: its images "
                        "would be read under the wrong class or twice; remove the link"
                    )
            if entry.is_dir():
                stack.append(path)
                continue
            if not is_image_name(entry.name):
                continue
            # is_file follows links to files, wherever they are; the directory entry answers it for the
            # others without a stat call
            if not entry.is_file():
                try:
                    os.stat(path)
                except OSError as exc:  # a link to nowhere
                    raise ZooError(f"{who}: cannot read {path}: {exc.strerror}") from None
                raise ZooError(f"{who}: {path} is not a regular file (a pipe or a device?); remove it")
            found.append(os.path.relpath(path, folder))
    return sorted(found)


def scan(
    root: Path,
    limit_per_class: int | None,
    seed: int,
    chosen: list[str] | None = None,
    limit_parts: tuple[str, ...] = PARTS,
    who: str = "imagefolder",
    classes_key: str = "data.classes",
) -> tuple[list[str], dict[str, Files]]:
    """The class names and, per folder part (train, and val and test where they are folders), its files.

    ``root`` holds ``train/<class>/`` (and optionally ``val/``, ``test/``) or the class folders themselves
    (then it is all train, to carve from). ``chosen`` keeps only those class folders, labelled 0..k-1 in its
    order; None keeps them all, sorted. ``limit_per_class`` keeps a ``seed``-drawn subset of each class in
    the folders of ``limit_parts`` alone.
    """
    import torch

    if (root / "train").is_dir():
        folders = {part: root / part for part in PARTS if (root / part).is_dir()}
    else:
        folders = {"train": root}  # one folder of classes: val and test are carved from it
    present = _subdirs(folders["train"])
    if not present:
        raise ZooError(
            f"{who}: {folders['train']} has no class folders; expected {root}/train/<class>/<image> "
            f"(and optionally val/, test/) or {root}/<class>/<image>"
        )
    if chosen is None:
        classes = present
    else:
        classes = _chosen_classes(chosen, present, folders["train"], who, classes_key)
    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, Files] = {}
    seen: dict[str, str] = {}  # real folders read, across parts and classes (see _images)
    for part, folder in folders.items():
        stray = sorted(set(_subdirs(folder)) - set(present))
        if stray:
            raise ZooError(f"{who}: {folder / stray[0]} is a class {folders['train']} does not have")
        entries = []
        for label, cls in enumerate(classes):
            if not (folder / cls).is_dir():
                continue
            files = _images(folder / cls, seen, who)
            if not files and part == "train":
                raise ZooError(f"{who}: class folder {folder / cls} has no images")
            if limit_per_class is not None and part in limit_parts and len(files) > limit_per_class:
                keep = torch.randperm(len(files), generator=gen)[:limit_per_class].sort().values
                files = [files[i] for i in keep.tolist()]
            rel = os.path.relpath(folder / cls, root)
            entries += [(os.path.join(rel, f), label) for f in files]
        if entries:
            parts[part] = entries
    return classes, parts


def _chosen_classes(chosen: list[str], present: list[str], folder: Path, who: str, key: str) -> list[str]:
    """``chosen`` checked against the class folders ``present`` in ``folder``."""
    for name in chosen:
        if name not in present:
            raise ZooError(
                f"{who}: {key}: {name!r} is not a class folder of {folder}"
                f"{did_you_mean(name, present)}; its class folders: {', '.join(present)}"
            )
    twice = sorted({name for name in chosen if chosen.count(name) > 1})
    if twice:
        raise ZooError(f"{who}: {key}: {twice[0]!r} is listed twice; list each class once")
    return list(chosen)


def to_carve(
    parts: dict[str, Files], val_fraction: float, test_fraction: float, who: str = "imagefolder"
) -> list[str]:
    """The splits ``parts`` lacks a folder for, to carve from train (test first), leaving train some."""
    carve = [part for part in ("test", "val") if part not in parts]
    if carve == ["test", "val"] and val_fraction + test_fraction >= 1:
        total = val_fraction + test_fraction
        raise ZooError(f"{who}: val_fraction + test_fraction must be below 1, got {total}")
    return carve


def carve(labels, carve: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Index tensors into the train folder's files (``labels``, a long tensor): ``train`` keeps the rest,
    each part of ``carve`` takes a stratified fraction of every class, drawn with ``seed``."""
    from zoo.data.datamodule import stratified_split

    fractions = {"test": test_fraction, "val": val_fraction}
    rest, *taken = stratified_split(labels, [fractions[p] for p in carve], seed)
    return {"train": rest, **dict(zip(carve, taken))}


def split_files(
    root: Path,
    *,
    classes: list[str] | None,
    limit_per_class: int | None,
    limit_parts: tuple[str, ...],
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    who: str,
    classes_key: str,
) -> tuple[list[str], dict[str, Files], list[str]]:
    """The classes, the files of every split (train, val, test) and which splits were carved: what the
    ``imagefolder`` data set would hold for the same settings, without reading an image."""
    import torch

    names, parts = scan(root, limit_per_class, split_seed, classes, limit_parts, who, classes_key)
    carved = to_carve(parts, val_fraction, test_fraction, who)
    if carved:
        pool = parts["train"]
        labels = torch.tensor([label for _, label in pool], dtype=torch.long)
        for part, idx in carve(labels, carved, val_fraction, test_fraction, split_seed).items():
            parts[part] = [pool[i] for i in idx.tolist()]
    check_split_sizes(root, {part: len(parts.get(part, ())) for part in PARTS}, carved, val_fraction,
                      test_fraction, who)
    return names, parts, carved


def check_split_sizes(
    top: Path, sizes: dict[str, int], carved: list[str], val_fraction: float, test_fraction: float,
    who: str = "imagefolder",
) -> None:
    """Refuse a folder too small for its split, before a run starts on an empty validation or test set."""
    from zoo.core.build import check_split_sizes as check

    if carved:
        # carved parts take a rounded share of every class, so a few images per class can round to none
        asked = {"val": f"val_fraction={val_fraction}", "test": f"test_fraction={test_fraction}"}
        fractions = " and ".join(asked[p] for p in reversed(carved))
        hint = f"{fractions} of each class round to too few images; add images or raise the fraction"
    else:
        hint = f"add images under {top}/<part>/<class>/"
    check(f"{who}: {top}", sizes, hint)
