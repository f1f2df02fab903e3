"""Writing an ExportGraph in each format, and reading each back as a function of a batch of images.

Every format takes a batch of any size (a dynamic first dimension) of the run's input dtype and gives
float32 probabilities. safetensors holds weights only: zoo rebuilds the networks from the recipes kept in
zoo-export.json (zoo.export.load), which needs zoo and the plugins the recipes name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.export import FILES

FORMATS = list(FILES)
# what reads each format back: the parity check's and the model card's words
RUNTIMES = {
    "onnx": "onnxruntime (CPU)",
    "torchscript": "torch.jit.load",
    "exported-program": "torch.export.load",
    "safetensors": "zoo.load (rebuilt from the recipes)",
}
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
# the batch of the example the graph is traced with: torch.export takes sizes 0 and 1 for constants
EXAMPLE_BATCH = 4

Predict = Callable[[torch.Tensor], torch.Tensor]


def check_format(fmt: str) -> str:
    if fmt not in FILES:
        from zoo.core.errors import did_you_mean

        known = ", ".join(FORMATS)
        raise ZooError(f"unknown export format {fmt!r}{did_you_mean(fmt, FORMATS)}; formats: {known}")
    return fmt


def _exported_program(graph: torch.nn.Module, example: torch.Tensor):
    batch = torch.export.Dim("batch")
    return torch.export.export(graph, (example,), dynamic_shapes=({0: batch},))


def write(fmt: str, graph: torch.nn.Module, example: torch.Tensor, folder: Path) -> Path:
    """Write ``graph`` in format ``fmt`` into ``folder``; the model file's path."""
    path = folder / FILES[fmt]
    with warnings.catch_warnings(), torch.no_grad(), _torch_logs_quiet():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notes are not for the user
        if fmt == "exported-program":
            torch.export.save(_exported_program(graph, example), path)
        elif fmt == "onnx":
            program = _exported_program(graph, example)
            torch.onnx.export(
                program, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamo=True, verbose=False, external_data=_weight_bytes(graph) > ONNX_INLINE_BYTES,
            )
        elif fmt == "torchscript":
            torch.jit.trace(graph, example, check_trace=False).save(str(path))
        else:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous().clone() for k, v in weights(graph).items()}, str(path))
    return path


# ONNX keeps a model in one protobuf of at most 2 GiB; larger weights go to a model.onnx.data file beside it
ONNX_INLINE_BYTES = 1 << 30


def _weight_bytes(graph: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in graph.state_dict().values())


@contextlib.contextmanager
def _torch_logs_quiet():
    """torch's exporters log their symbolic-shape reasoning and print the graph they failed on; what failed is
    said in the error instead."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def weights(graph: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each member's network and input statistics, named as in zoo's Classifier with m<i>. before them."""
    out = {}
    for i, member in enumerate(graph.members):
        for key, value in member.net.state_dict().items():
            out[f"m{i}.net.{key}"] = value
        out[f"m{i}.input_mean"] = member.mean
        out[f"m{i}.input_std"] = member.std
    return out


Rebuild = Callable[[dict[str, torch.Tensor]], torch.nn.Module]


def read(fmt: str, path: Path, rebuild: Rebuild | None = None) -> Predict:
    """A function of a batch giving the probabilities of the model file at ``path``."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ZooError(
                f"{path}: an ONNX export runs on onnxruntime, which is not installed "
                "(pip install 'zoo[export]')"
            ) from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.contiguous().numpy()})[0])

        return run_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
        elif fmt == "exported-program":
            module = torch.export.load(str(path)).module()
        else:
            from safetensors.torch import load_file

            assert rebuild is not None
            module = rebuild(load_file(str(path)))

    def run_module(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run_module


_USER_LINE = re.compile(
    r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)'
)
_NO_ONNX_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>")
_CAUSE = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>: (.+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def export_failure(fmt: str, exc: Exception) -> str:
    """What the exporter could not take, in one line: the operation, or the model's line of code where torch
    names it. torch's messages run to pages; the ONNX exporter's first line only says which step failed."""
    text = _ANSI.sub("", str(exc))
    where = _USER_LINE.search(text)
    at = f" (at {where.group(1)}:{where.group(2)}: {where.group(3).strip()[:120]})" if where else ""
    missing = _NO_ONNX_OP.search(text)
    cause = _CAUSE.search(text)
    if missing:
        op = f"{missing.group(1)}.{missing.group(2)}"
        why = f"ONNX has no translation of the operation {op} (torch.ops.{op}) that the model uses"
    elif "data-dependent" in text:
        why = "its forward branches on, or sizes a tensor by, its input's values, which one graph cannot hold"
    elif cause:
        why = f"{cause.group(1)}: {cause.group(2).strip()[:300]}"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        why = f"{type(exc).__name__}: {lines[0][:300] if lines else 'no message'}"
    return f"the model cannot be exported as {fmt}: {why}{at}"
