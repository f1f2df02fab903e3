"""Where the benchmarks find the shared CIFAR-10 JPEG copy, whole or as a tiny subset.

Not a benchmark itself (hence the underscore); imported by the scripts next to it, which Python finds
because a script's own folder is the first entry of ``sys.path``.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpg.tar.gz"
UNPACKED = ROOT / "data" / "cifar10-jpg"  # where the README's unpack command puts it
SPLITS = ("train", "test")


def is_image_folder(path: Path) -> bool:
    return all((path / split).is_dir() for split in SPLITS)


def full_folder(path: str | Path | None, scratch: Path) -> tuple[Path, str]:
    """An unpacked copy of the whole set and how it was found: given, the usual place, or unpacked here."""
    if path is not None:
        path = Path(path).expanduser().resolve()
        if not is_image_folder(path):
            raise SystemExit(f"--data {path}: expected train/<class>/*.jpg and test/<class>/*.jpg under it")
        return path, "given"
    if is_image_folder(UNPACKED):
        return UNPACKED, "unpacked copy in data/"
    if not ARCHIVE.is_file():
        raise SystemExit(f"no CIFAR-10 JPEG copy: neither {UNPACKED} nor {ARCHIVE}; pass --data DIR")
    dest = scratch / "cifar10-jpg"
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest, f"unpacked from {ARCHIVE} (untimed)"


def tiny_folder(dest: Path, per_class: dict[str, int], source: str | Path | None = None) -> tuple[Path, str]:
    """The first ``per_class[split]`` images of every class of each split, copied into ``dest``.

    Reads an unpacked copy when there is one (a few hundred file copies); otherwise streams the archive
    (about 2 s, since the last class of train sits at its end) and stops once every quota is filled.
    """
    src = Path(source).expanduser().resolve() if source is not None else UNPACKED
    if is_image_folder(src):
        for split in SPLITS:
            for cls in sorted(p.name for p in (src / split).iterdir() if p.is_dir()):
                out = dest / split / cls
                out.mkdir(parents=True, exist_ok=True)
                for f in sorted((src / split / cls).iterdir())[: per_class[split]]:
                    shutil.copyfile(f, out / f.name)
        return dest, f"first {per_class} images per class of {src}"
    if source is not None:
        raise SystemExit(f"--data {src}: expected train/<class>/*.jpg and test/<class>/*.jpg under it")
    if not ARCHIVE.is_file():
        raise SystemExit(f"no CIFAR-10 JPEG copy: neither {UNPACKED} nor {ARCHIVE}; pass --data DIR")
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) >= per_class[parts[0]]:
                continue
            out = dest / parts[0] / parts[1]
            out.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as f, open(out / parts[2], "wb") as g:
                shutil.copyfileobj(f, g)
            taken[key] = taken.get(key, 0) + 1
            # 10 classes per split; stop reading as soon as all 20 quotas are met
            if len(taken) == 20 and all(n >= per_class[s] for (s, _), n in taken.items()):
                break
    return dest, f"first {per_class} images per class of {ARCHIVE}"


def cpu_cores() -> int:
    from zoo.data.datamodule import usable_cores

    return usable_cores()
