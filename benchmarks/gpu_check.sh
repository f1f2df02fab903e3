#!/usr/bin/env bash
# The GPU-side checks of the streamed-image work, in one go, within 8 minutes on one H100:
#   1. benchmarks/input_pipeline.py: zoo's streamed JPEG pipeline against torchvision's ImageFolder
#      (2,000 ImageNet-like files made here, 3 rounds; CPU work, timed on the GPU machine's CPUs);
#   2. benchmarks/cifar10_speed.py --device cuda: the cifar10-fast recipe against airbench on the GPU
#      (zoo alone when airbench is not installed: the GPU machine may have no network to install it).
# Outputs (JSON, logs, nvidia-smi) go under $OUT, or ./gpu-check-out when OUT is unset.
#
# cifar10_speed.py needs the CIFAR-10 JPEG copy: CIFAR10_JPEG names its folder (train/ and test/) or its
# .tar.gz; otherwise it is looked for where cifar10_speed.py looks (data/cifar10-jpg, ../shared/...) and in
# ./shared/data/cifar10-jpeg/. Without one that check is skipped, saying so.
#
#     bash benchmarks/gpu_check.sh
#     OUT=/tmp/gpu-out CIFAR10_JPEG=/data/cifar10-jpg.tar.gz bash benchmarks/gpu_check.sh
set -uo pipefail

cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (PyTorch sees none), so nothing was run; run this on a machine with one" >&2
    exit 1
fi

out="${OUT:-./gpu-check-out}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$python" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))' \
    > "$out/torch.txt" 2>&1
status=0

# zoo's JPEG box decoder is a C extension built at install; build it in place if this copy lacks it
if ! "$python" -c 'import zoo.data._jpeg_box' 2>/dev/null; then
    "$python" -m pip install --quiet --no-deps --no-build-isolation -e . > "$out/build.log" 2>&1 \
        || echo "gpu_check: could not build zoo.data._jpeg_box (see $out/build.log): whole images are decoded" >&2
fi

echo "gpu_check: input pipeline (about 2 minutes)"
if timeout 200 "$python" benchmarks/input_pipeline.py --json --keep "$out/input-pipeline-files" \
        > "$out/input_pipeline.json" 2> "$out/input_pipeline.log"; then
    tail -n 1 "$out/input_pipeline.json"
else
    echo "gpu_check: input_pipeline.py failed or ran out of time (exit $?); see $out/input_pipeline.log" >&2
    status=1
fi
rm -rf "$out/input-pipeline-files"  # 2,000 images twice: not worth carrying back

data_args=()
have_cifar=yes
cifar="${CIFAR10_JPEG:-}"
[ -z "$cifar" ] && [ -f shared/data/cifar10-jpeg/cifar10-jpg.tar.gz ] && cifar=shared/data/cifar10-jpeg/cifar10-jpg.tar.gz
if [ -n "$cifar" ] && [ -f "$cifar" ]; then
    echo "gpu_check: unpacking $cifar"
    mkdir -p "$out/cifar10-jpg"
    tar -xzf "$cifar" -C "$out/cifar10-jpg" || status=1
    data_args=(--data "$(dirname "$(find "$out/cifar10-jpg" -maxdepth 3 -type d -name train | head -n 1)")")
elif [ -n "$cifar" ]; then
    data_args=(--data "$cifar")
elif ! [ -d data/cifar10-jpg/train ] && ! [ -f ../shared/data/cifar10-jpeg/cifar10-jpg.tar.gz ]; then
    echo "gpu_check: no CIFAR-10 JPEG copy (set CIFAR10_JPEG to its folder or .tar.gz); cifar10_speed.py skipped" >&2
    have_cifar=no
    status=1
fi

[ "$have_cifar" = no ] && exit $status
only=()
"$python" -c 'import airbench' 2>/dev/null || {
    only=(--only zoo)
    echo "gpu_check: airbench is not installed (pip install airbench==0.1.8): the zoo side alone" >&2
}
echo "gpu_check: cifar10_speed.py on cuda (about 4 minutes)"
if timeout 270 "$python" benchmarks/cifar10_speed.py --device cuda --json "${only[@]}" "${data_args[@]}" \
        > "$out/cifar10_speed.json" 2> "$out/cifar10_speed.log"; then
    tail -n 1 "$out/cifar10_speed.json"
else
    echo "gpu_check: cifar10_speed.py failed or ran out of time (exit $?); see $out/cifar10_speed.log" >&2
    status=1
fi
rm -rf "$out/cifar10-jpg"
exit $status
