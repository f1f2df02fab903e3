"""A trained model's first classes for image files, each decoded as the run's evaluation decodes its images.

Files go through in batches, decoded on a few threads while the model classifies the batch before, so a
folder of any size takes the memory of two batches. A file that cannot be read or decoded is reported
in its place and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ZooError
from zoo.core.io import MAX_IMAGE_BYTES, read_bytes

# Images per forward pass: a ResNet-50 at 224x224 holds a few hundred MB of activations for 64 of them.
BATCH = 64


@dataclass
class FileResult:
    path: Path
    scores: list[float]  # best first
    classes: list[int]
    error: str | None = None  # why the file has no prediction; the lists are empty then


def image_reader(data_spec: dict[str, Any], input_shape: tuple[int, ...]) -> Callable[[Path], torch.Tensor]:
    """One file to the uint8 (C, H, W) image the model takes: a streamed data set's evaluation crop (its
    ``crop_pct`` of the shorter side, centred, resized to ``eval_size``), else the whole image resized to the
    model's input size in its channels, as ``zoo.load`` reads files."""
    if "crop_pct" in data_spec:
        from zoo.data.images import decode_crop, eval_chooser

        size = data_spec.get("eval_size") or data_spec.get("image_size") or input_shape[-1]
        choose = eval_chooser(data_spec["crop_pct"])
        def crop(path: Path) -> torch.Tensor:
            return decode_crop(read_bytes(path, MAX_IMAGE_BYTES, "image file"), str(path), size, choose)

        return crop
    from zoo.export.images import decode, takes_rgb

    rgb, size = takes_rgb(input_shape), tuple(input_shape[1:])
    return lambda path: decode(str(path), rgb, size)


def predict_files(
    model, files: Sequence[Path], k: int, read: Callable[[Path], torch.Tensor], threads: int = 1,
    where: str = "the model",
) -> Iterator[FileResult]:
    """Each file's ``k`` first classes and their scores (``evaluation.top_classes``), in the files' order."""
    from zoo.training.evaluation import top_classes

    def decoded(path: Path) -> torch.Tensor | str:
        try:
            return read(path)
        except ZooError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever else a file does to a decoder: that file's failure
            return f"{path}: {type(exc).__name__}: {exc}"

    batches = [files[i : i + BATCH] for i in range(0, len(files), BATCH)]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending: list[Future] = [pool.submit(decoded, p) for p in batches[0]] if batches else []
        for n, batch in enumerate(batches):
            images = [f.result() for f in pending]
            # the next batch decodes while this one is classified
            pending = [pool.submit(decoded, p) for p in batches[n + 1]] if n + 1 < len(batches) else []
            good = [img for img in images if isinstance(img, torch.Tensor)]
            if good:
                scores, classes = top_classes(model, torch.stack(good), k, where)[:2]
                ranked = iter(zip(scores.tolist(), classes.tolist()))
            for path, img in zip(batch, images):
                if isinstance(img, str):
                    yield FileResult(path, [], [], img)
                else:
                    yield FileResult(path, *next(ranked))
