"""Evaluating and predicting with any saved model: a run directory, a checkpoint, or an ensemble file."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ZooError
from zoo.core.io import MAX_TENSOR_BYTES, open_regular, read_bytes, torch_load
from zoo.monitoring.metrics import accuracy, classification_metrics, decision_metrics, nll
from zoo.training.classifier import Classifier
from zoo.training.ensemble_model import FORMAT, Ensemble, vote_counts


def find_checkpoint(path: str | Path) -> Path:
    """The file to load for ``path``: itself, or a run directory's ensemble or best checkpoint."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "ensemble.ckpt", path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise ZooError(f"{path}: no ensemble.ckpt or checkpoints/best.ckpt in this run directory")
    if not path.is_file():
        raise ZooError(f"{path}: no such run directory or checkpoint")
    return path


# What torch's weights-only unpickler allows by itself: tensors, their storages and rebuild helpers, OrderedDict
_SAFE_GLOBAL = re.compile(r"(torch\..*|collections\.OrderedDict|builtins\.(set|frozenset|bytearray|slice|complex))$")


def _imports_code(path: Path) -> str | None:
    """The first callable a pickle (plain, or inside torch's zip format) would import that torch's safe
    loader does not allow, read without running it."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        else:
            data = read_bytes(path, MAX_TENSOR_BYTES)
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings = [*strings[-1:], arg]
            name = None
            if op.name == "GLOBAL":
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL":
                name = ".".join(strings[-2:])
            if name is not None and not _SAFE_GLOBAL.match(name):
                return name
    except Exception:  # noqa: BLE001 - not a pickle at all: nothing it could run
        return None
    return None


def safe_load(path: Path, what: str = "checkpoint") -> Any:
    """torch.load restricted to tensors and plain containers: a file that would run code is refused, and
    so is anything but a regular file of at most MAX_TENSOR_BYTES."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note about pickle protocols is noise in a refusal
            return torch_load(path, what)
    except ZooError:
        raise
    except pickle.UnpicklingError as exc:
        # torch names the global it refused; a scan of the pickle finds it where the message does not
        named = re.search(r"Unsupported global: GLOBAL (\S+) was not an allowed global", str(exc))
        target = named.group(1) if named else _imports_code(path)
        if target is None:  # the weights-only unpickler also fails on bytes that are no pickle at all
            raise ZooError(f"{path}: not a readable checkpoint (not a file torch.save wrote)") from None
        raise ZooError(
            f"{path}: refused to load: it holds objects that would run code when unpickled (it imports {target})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a file that is not a checkpoint at all
        raise ZooError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def load_model(path: str | Path, plugins: Iterable[str] = ()) -> Classifier | Ensemble:
    """A trained Classifier or Ensemble, in eval mode on the CPU.

    ``plugins``: plugin modules or files the user names (``--plugin``); each is imported, and a plugin
    the checkpoint's recipe names is imported only if it is listed here (see ``zoo.core.recipe.from_dict``).
    """
    from zoo.core import discovery

    plugins = list(plugins)
    discovery.load_local(plugins, kind="--plugin")
    file = find_checkpoint(path)
    payload = safe_load(file)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return Ensemble.load(file, trusted_plugins=plugins)
    if not (isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload):
        raise ZooError(f"{file}: not a zoo checkpoint (no state_dict and hyper_parameters)")
    hp = payload["hyper_parameters"]
    shape, classes = tuple(hp["input_shape"]), hp["num_classes"]
    model = Classifier.for_inference(hp["recipe"], shape, classes, str(file), plugins)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # names and shapes that another model (or a hand-edited recipe) wrote
        detail = " ".join(str(exc).split())
        raise ZooError(f"{file}: its weights do not fit the model its recipe describes ({detail[:300]})") from None
    return model.eval()


def load_inputs(path: Path, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The inputs of a ``.npy`` or ``.pt`` file for ``zoo predict --input``, checked against ``input_shape``."""
    if path.suffix == ".npy":
        import numpy as np

        with open_regular(path, MAX_TENSOR_BYTES, "file of inputs") as f:
            try:
                array = np.load(f, allow_pickle=False)
            except ValueError as exc:  # not an array, or one of Python objects (which would need pickle)
                raise ZooError(f"{path}: not a NumPy array of numbers ({exc})") from None
        x = torch.from_numpy(array) if array.dtype.kind in "biuf" else None
    else:
        x = safe_load(path, "file of inputs")
    if not isinstance(x, torch.Tensor) or x.is_complex() or x.dtype == torch.bool:
        raise ZooError(f"{path}: expected a saved tensor (or .npy array) of real-valued inputs")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ZooError(
            f"{path}: inputs have shape {tuple(x.shape[1:])} per sample; the model takes {tuple(input_shape)}"
        )
    check_finite(x, f"{path}: input", "the model cannot classify it")
    return x


def check_finite(values: torch.Tensor, what: str, consequence: str) -> None:
    """Refuse NaN or infinite values (one row of ``values`` per sample), naming the first sample that has one."""
    if not values.is_floating_point():
        return
    bad = (~torch.isfinite(values.reshape(len(values), -1))).any(1).nonzero().flatten()
    if len(bad):
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ZooError(f"{what} {int(bad[0])}{more} holds NaN or infinite values: {consequence}")


_BROKEN_OUTPUT = (
    "the model's weights are broken (a diverged run?) or the inputs are far outside what it was trained on"
)


def data_of(data_spec: dict[str, Any], split: str):
    """The data module of ``data_spec``, once ``split`` is known to be one of its splits."""
    from zoo.core.catalog import datasets

    if split not in ("train", "val", "test"):
        raise ZooError(f"split must be train, val or test, got {split!r}")
    return datasets.build(data_spec, "data")


def split_of(data_spec: dict[str, Any], split: str):
    """The data module and its split ``split`` held in memory; streamed data is refused (see :func:`batches_of`)."""
    dm = data_of(data_spec, split)
    if not hasattr(dm, split):
        raise ZooError(
            f"data: the {data_spec.get('name')} data set streams its images instead of holding them in memory, "
            f"and this command needs its {split} split in memory; zoo eval and zoo predict read streamed data"
        )
    return dm, getattr(dm, split)


def batches_of(dm: Any, split: str) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and labels of a split in order, every sample once: whole, or in batches when it is streamed."""
    if hasattr(dm, "batches"):
        return dm.batches(split)
    part = getattr(dm, split)
    return [(part.x, part.y)]


def first_samples(dm: Any, split: str, n: int) -> torch.Tensor:
    """The first ``n`` inputs of a split (all of a shorter one), reading no more batches of it than needed."""
    taken, count = [], 0
    for x, _ in batches_of(dm, split):
        taken.append(x[: n - count])
        count += len(taken[-1])
        if count >= n:
            break
    return torch.cat(taken)


def check_fits(model: Classifier | Ensemble, dm: Any, where: str | Path = "the model") -> None:
    """Refuse data whose inputs or classes are not the ones the model was trained on."""
    shape, classes = tuple(getattr(dm, "input_shape", ())), getattr(dm, "num_classes", None)
    if shape and tuple(model.input_shape) != shape:
        raise ZooError(
            f"{where}: the model takes inputs of shape {tuple(model.input_shape)}, the data has {shape}: "
            "evaluate it on data of the kind it was trained on"
        )
    if classes is not None and classes != model.num_classes:
        raise ZooError(f"{where}: the model has {model.num_classes} classes, the data {classes}")


def evaluate(
    model: Classifier | Ensemble, data_spec: dict[str, Any], split: str = "test", where: str | Path = "the model"
) -> dict[str, Any]:
    """Accuracy and the metrics of zoo.monitoring.metrics on a split; per member too for an ensemble.

    A vote ensemble has votes, not probabilities (zoo.training.ensemble_model): its report has the
    accuracy and precision/recall/F1 of its decisions and how its members voted (``vote``: the mean
    share of members behind the winning class, the share of unanimous decisions, the ties broken by
    probability), and ``None`` for NLL, top-5 accuracy, ROC-AUC and PR-AUC.
    """
    dm = data_of(data_spec, split)
    check_fits(model, dm, where)
    ensemble = isinstance(model, Ensemble)
    outputs, labels = [], []
    for x, y in batches_of(dm, split):
        # in-memory data comes as one batch, so the number check_finite gives is the sample's in the split;
        # streamed data is decoded uint8 pixels, never NaN
        check_finite(x, f"data '{data_spec.get('name')}', {split} split: sample", "the model cannot classify it")
        outputs.append(model.member_probabilities(x) if ensemble else model.predict_proba(x))
        labels.append(y)
    y = torch.cat(labels)
    report: dict[str, Any] = {"split": split, "samples": len(y)}
    if getattr(dm, "split_notes", {}).get(split):
        report["split_note"] = dm.split_notes[split]
    if getattr(dm, "classes", None) is not None:
        report["classes"] = [str(c) for c in dm.classes]
    if ensemble:
        member_probs = torch.cat(outputs, dim=1)
        outputs = f"{where}: output for the {split} split's sample"
        check_finite(member_probs.transpose(0, 1), outputs, _BROKEN_OUTPUT)
        report["members"] = [accuracy(p, y) for p in member_probs]
        if not model.gives_probabilities:
            return {**report, **_vote_report(model, member_probs, y)}
        probs = model.combine_probabilities(member_probs)
    else:
        probs = torch.cat(outputs)
        check_finite(probs, f"{where}: output for the {split} split's sample", _BROKEN_OUTPUT)
    report["acc"] = accuracy(probs, y)
    report["nll"] = nll(probs, y)
    report.update(classification_metrics(probs, y))
    return report


def _vote_report(model: Ensemble, member_probs: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    pred = model.decide(member_probs)
    votes = vote_counts(member_probs, model.num_classes)
    top = votes.max(-1).values
    return {
        "acc": float((pred == y).float().mean()),
        "nll": None, "top5_acc": None, "roc_auc": None, "pr_auc": None, "auc_classes": 0,
        **decision_metrics(pred, y, model.num_classes),
        "vote": {
            "winning_share": float(top.double().mean()) / len(member_probs),
            "unanimous": float((top == len(member_probs)).double().mean()),
            "ties": int(((votes == top.unsqueeze(-1)).sum(-1) > 1).sum()),
        },
    }


def predictions(
    model: Classifier | Ensemble, x: torch.Tensor, where: str | Path = "the model"
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Each input's class, its score, and what the score is: the class probability, or a vote ensemble's vote
    share. An output that is not finite is refused, naming the input (``where``: the model, for the message)."""
    scores, index, score_name = top_classes(model, x, 1, where)
    return index[:, 0], scores[:, 0], score_name


def top_classes(
    model: Classifier | Ensemble, x: torch.Tensor, k: int, where: str | Path = "the model"
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(B, k) scores and (B, k) classes of each input's ``k`` first classes, best first, and the scores' name.

    The scores are probabilities, or a vote ensemble's vote shares, ranked by votes and, among classes with
    as many votes, by summed member probability, as the ensemble decides (``Ensemble.decide``): so the first
    class is always the model's prediction. Classes that tie on all of that come in index order.
    """
    check_finite(x, "input", "the model cannot classify it")
    if isinstance(model, Ensemble) and not model.gives_probabilities:
        member_probs = model.member_probabilities(x)
        check_finite(member_probs.transpose(0, 1), f"{where}: output for input", _BROKEN_OUTPUT)
        scores, score_name = model.vote_shares(member_probs), "vote_share"
        # stable sorts, the tie-break first: the order by summed probability survives among equal votes
        order = member_probs.double().sum(0).argsort(dim=-1, descending=True, stable=True)
        order = order.gather(1, scores.gather(1, order).argsort(dim=-1, descending=True, stable=True))
    else:
        scores, score_name = model.predict_proba(x), "probability"
        check_finite(scores, f"{where}: output for input", _BROKEN_OUTPUT)
        order = scores.argsort(dim=-1, descending=True, stable=True)
    index = order[:, :k]
    return scores.gather(1, index), index, score_name


def class_names(data_spec: dict[str, Any]) -> list[str]:
    """The names of a model's classes, from the data set its recipe trained on (built to ask it)."""
    from zoo.core.catalog import datasets

    return [str(c) for c in datasets.build(data_spec, "data").classes]


def split_predictions(
    model: Classifier | Ensemble, dm: Any, split: str, where: str | Path = "the model"
) -> tuple[torch.Tensor, torch.Tensor, str, torch.Tensor]:
    """:func:`predictions` for every sample of a data module's split, in order, with the labels; batch by batch,
    so that a streamed split is never whole in memory, only its predictions."""
    preds, scores, labels, score_name = [], [], [], "probability"
    for x, y in batches_of(dm, split):
        pred, score, score_name = predictions(model, x, where)
        preds.append(pred)
        scores.append(score)
        labels.append(y)
    return torch.cat(preds), torch.cat(scores), score_name, torch.cat(labels)
