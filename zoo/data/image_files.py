"""Which files are images: by their extension, alone or found in folders. No torch here, so a data set
plugin can import it without slowing down `zoo --help`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from zoo.core.errors import ZooError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(paths: Iterable[str | Path], option: str = "--input") -> list[Path]:
    """The files ``paths`` name, in their order: a file as it is (whatever its extension: it was named), a
    folder as the image files under it at any depth, sorted. Hidden entries are skipped, and links to folders
    are not followed, so a link loop cannot make the walk endless. A path that does not exist, or a folder
    without image files, is a ZooError naming it (``option``: the command-line option it came from)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            if not path.exists():
                raise ZooError(f"{option} {path}: no such file or folder")
            found.append(path)
            continue
        inside = []
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = [n for n in subfolders if not n.startswith(".")]  # the ones os.walk goes into
            inside += [Path(folder, n) for n in names if not n.startswith(".") and is_image_name(n)]
        inside.sort()
        if not inside:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ZooError(f"{option} {path}: no image files in this folder ({kinds})")
        found.extend(inside)
    return found
