"""Taking trained models out of zoo: one graph with the run's preprocessing inside, written as ONNX,
TorchScript, a torch.export program or safetensors weights, checked against zoo's own evaluation, and
loaded again by ``zoo.load``.

Built on training (the models it loads and the evaluation it is checked against); imports core, data and
training, never tools, reporting or the command line.
"""

# each format's model file in an export folder; here, without torch, so `zoo --help` lists them at once
FILES = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported-program": "model.pt2",
    "safetensors": "model.safetensors",
}
