"""``zoo.load``: a trained model, ready to predict, from a run folder, a checkpoint or an export folder."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ZooError
from zoo.core.io import MAX_TEXT_BYTES, read_text
from zoo.export import formats

CONFIG = "zoo-export.json"
CONFIG_FORMAT = "zoo-export-v1"


class Predictor:
    """A model that takes images and gives class probabilities.

    ``predict(images)``: ``images`` is a tensor (N, C, H, W), uint8 pixels or floats on the [0, 1] scale,
    or a list of image file paths, decoded and resized to the model's input size as the run's data was;
    the result is an (N, classes) float32 tensor of probabilities. ``top_k`` names the likeliest classes.
    """

    def __init__(
        self, probabilities: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int],
        input_dtype: torch.dtype | None, classes: Callable[[], list[str]] | list[str], source: str,
        data_spec: dict[str, Any] | None = None,
    ) -> None:
        self._probabilities = probabilities
        # image files are read as the run's evaluation reads its images (a streamed set's centre crop)
        from zoo.export.image_predictions import image_reader

        self._read = image_reader(data_spec or {}, tuple(input_shape))
        self.input_shape = tuple(input_shape)
        # the dtype the model file takes; None: the PyTorch model, which takes uint8 or floats alike
        self.input_dtype = input_dtype
        self._classes = classes
        self.source = source

    @property
    def classes(self) -> list[str]:
        if callable(self._classes):  # a run's class names come from its data set, built only when asked
            self._classes = list(self._classes())
        return self._classes

    def preprocess(self, images: torch.Tensor | Sequence[str | Path]) -> torch.Tensor:
        """The batch the model file takes: files decoded (uint8), the shape checked, in the file's dtype."""
        if not isinstance(images, torch.Tensor):
            paths = [images] if isinstance(images, (str, Path)) else list(images)
            if not paths:
                raise ZooError("no image files given")
            images = torch.stack([self._read(Path(p)) for p in paths])
        if tuple(images.shape[1:]) != self.input_shape or images.ndim != len(self.input_shape) + 1:
            takes = ", ".join(map(str, self.input_shape))
            given = tuple(images.shape)
            raise ZooError(f"{self.source}: images of shape {given}; the model takes (N, {takes})")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ZooError(
                f"{self.source}: images must be uint8 pixels or floats on the [0, 1] scale, "
                f"got {images.dtype}"
            )
        if self.input_dtype == torch.uint8 and images.dtype != torch.uint8:
            raise ZooError(f"{self.source}: this export takes uint8 images (0-255), got {images.dtype}")
        if self.input_dtype is not None and self.input_dtype != torch.uint8:
            from zoo.data.datamodule import to_unit_float

            images = to_unit_float(images, self.input_dtype)
        return images.cpu()

    def predict(self, images: torch.Tensor | Sequence[str | Path]) -> torch.Tensor:
        """(N, classes) probabilities."""
        return self._probabilities(self.preprocess(images)).float()

    def top_k(self, images: torch.Tensor | Sequence[str | Path], k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` likeliest classes by name with their probabilities, likeliest first."""
        probs = self.predict(images)
        values, index = probs.topk(min(k, probs.shape[1]), dim=1)
        names = self.classes
        return [[(names[int(i)], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, index)]


def load(path: str | Path, plugins: Iterable[str] = ()) -> Predictor:
    """A trained model from a run folder, a checkpoint or a ``zoo export`` folder.

    ``plugins``: plugin modules or files to import; a plugin a run's recipe names is imported only when
    listed here, as with ``zoo eval --plugin``. An export of TorchScript or an exported program needs
    neither the run nor its plugins; safetensors rebuilds the networks (their plugins installed); ONNX
    needs onnxruntime.
    """
    path = Path(path)
    if (path / CONFIG).is_file():
        return load_export(path, plugins)
    from zoo.training.evaluation import class_names, load_model

    model = load_model(path, plugins)
    data = model.recipe["data"]
    return Predictor(model.predict_proba, model.input_shape, None, lambda: class_names(data), str(path), data)


def read_config(folder: Path) -> dict[str, Any]:
    file = folder / CONFIG
    try:
        config = json.loads(read_text(file, MAX_TEXT_BYTES, "export description"))
    except json.JSONDecodeError as exc:
        raise ZooError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise ZooError(f"{file}: not a zoo export description (format {CONFIG_FORMAT})")
    return config


def load_export(folder: Path, plugins: Iterable[str] = ()) -> Predictor:
    config = read_config(folder)
    fmt = formats.check_format(config["model_format"])
    file = folder / formats.FILES[fmt]
    if not file.is_file():
        raise ZooError(f"{folder}: {file.name} is missing from this {fmt} export")
    plugins = list(plugins)

    def rebuild(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        return rebuild_graph(config, tensors, str(file), plugins)

    dtype = getattr(torch, config["input"]["dtype"])
    predict = formats.read(fmt, file, rebuild)
    data = (config.get("members") or [{}])[0].get("recipe", {}).get("data")
    return Predictor(predict, config["input"]["shape"], dtype, list(config["classes"]), str(folder), data)


def rebuild_graph(config: dict[str, Any], tensors: dict[str, torch.Tensor], where: str, plugins: list[str]):
    """The ExportGraph of a safetensors export: each member's network from its recipe, with these weights."""
    from zoo.core import discovery
    from zoo.export.graph import build_graph, set_tta
    from zoo.training.classifier import Classifier
    from zoo.training.ensemble_model import Ensemble

    discovery.load_local(plugins, kind="plugins=")
    members = []
    for i, entry in enumerate(config["members"]):
        shape, classes = tuple(entry["input_shape"]), entry["num_classes"]
        member = Classifier.for_inference(entry["recipe"], shape, classes, where, plugins)
        prefix = f"m{i}.net."
        try:
            own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            member.net.load_state_dict(own)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise ZooError(
                f"{where}: its weights do not fit the model its recipe describes ({detail[:300]})"
            ) from None
        member.set_input_stats(tensors[f"m{i}.input_mean"], tensors[f"m{i}.input_std"])
        members.append(member.eval())
    model = members[0] if len(members) == 1 else Ensemble(members, "mean")
    set_tta(model, config["tta"])
    return build_graph(model, getattr(torch, config["input"]["dtype"]))
