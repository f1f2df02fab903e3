"""The model card written beside an export: README.md, a YAML metadata block, then how to use the model."""

from __future__ import annotations

from typing import Any

import yaml

from zoo.export.formats import FILES, INPUT_NAME, OUTPUT_NAME


def card_text(meta: dict[str, Any]) -> str:
    """README.md: the metadata between --- lines (as Hugging Face model cards have it), then prose."""
    fmt, dtype = meta["format"], meta["input"]["dtype"]
    shape = ", ".join(str(n) for n in meta["input"]["shape"])
    scale = "uint8 pixels, 0-255" if dtype == "uint8" else "float32 on the [0, 1] scale"
    accuracy = _percent(meta["metrics"].get("test_acc"))
    file = FILES[fmt]
    usage = {
        "onnx": (
            "```python\nimport numpy as np\nimport onnxruntime\n\n"
            f"session = onnxruntime.InferenceSession(\"{file}\", providers=[\"CPUExecutionProvider\"])\n"
            f"images = np.zeros((16, {shape}), dtype=np.{dtype})   # your batch, any size\n"
            f"probabilities = session.run([\"{OUTPUT_NAME}\"], {{\"{INPUT_NAME}\": images}})[0]\n```\n"
        ),
        "torchscript": (
            f"```python\nimport torch\n\nmodel = torch.jit.load(\"{file}\")\n"
            f"probabilities = model(torch.zeros((16, {shape}), dtype=torch.{dtype}))\n```\n"
        ),
        "exported-program": (
            f"```python\nimport torch\n\nmodel = torch.export.load(\"{file}\").module()\n"
            f"probabilities = model(torch.zeros((16, {shape}), dtype=torch.{dtype}))\n```\n"
        ),
        "safetensors": (
            "The weights alone; zoo rebuilds the networks from the recipes in zoo-export.json "
            "(with the plugins they name installed):\n\n"
        ),
    }[fmt]
    tta = meta["tta"]
    tta_text = (
        f"the run's test-time augmentation is inside: each image is seen {tta['views']} ways "
        f"({tta['description']}) and the probabilities averaged."
        if tta["included"] else
        "no test-time augmentation" + (
            f" (the run's evaluation averages {tta['run_views']} views; `zoo export --tta` puts them in)"
            if tta["run_views"] > 1 else ""
        ) + "."
    )
    check = meta["check"]
    text = [
        "---",
        _yaml(meta),
        "---",
        "",
        f"# {meta['name']}",
        "",
        f"A {meta['kind']} trained by zoo on `{meta['dataset']['name']}` ({len(meta['classes'])} classes), "
        f"exported as {fmt} (`{file}`). Test accuracy of the run: {accuracy}.",
        "",
        f"**Input**: `{INPUT_NAME}`, shape (N, {shape}), {scale}; N is any batch size. The conversion to "
        "floats and the standardization with the run's training-split mean and std happen inside the model.",
        "",
        f"**Output**: `{OUTPUT_NAME}`, shape (N, {len(meta['classes'])}): class probabilities (softmax), "
        f"each row summing to 1, in the order of `classes` above. {tta_text[0].upper()}{tta_text[1:]}",
        "",
        f"Computed in float32 (the run trained with precision {meta['precision']['trained']}).",
        "",
        f"Checked when written: on {check['samples']} test images the exported model's probabilities differ "
        f"from zoo's evaluation of the run by at most {check['max_abs_diff']:.2e}, and their top-1 classes "
        f"agree on {100 * check['top1_agreement']:.2f}% of them.",
        "",
        "## Use",
        "",
        usage,
        "With zoo, from this folder (any format; image files are decoded and resized to the input size):",
        "",
        "```python\nimport zoo\n\nmodel = zoo.load(\"path/to/this/folder\")\n"
        "probabilities = model.predict([\"digit.png\", \"other.png\"])   # or a tensor (N, "
        f"{shape})\nprint(model.top_k([\"digit.png\"], k=3))   # [[(class name, probability), ...]]\n```\n",
    ]
    return "\n".join(text)


def _yaml(meta: dict[str, Any]) -> str:
    # short lists (a shape, a class list) on one line, as a person writes them
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)
    return text.rstrip()


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "not recorded"


def read_metadata(text: str) -> dict[str, Any]:
    """The YAML block at the top of a model card."""
    if not text.startswith("---\n"):
        raise ValueError("no metadata block")
    block = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(block)
