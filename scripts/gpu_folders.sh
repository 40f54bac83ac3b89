#!/usr/bin/env bash
# Issue 24's GPU measurement in one call, for a lent GPU machine: ResNet-18 and ResNet-50 trained
# end to end on the test folder with each data.loader (device, boxes, transforms; as many
# DataLoader workers as the machine has cores but one) against their bare step on data already
# on the GPU (scripts/bench.py --parts imagenet). The test folder is made there from the
# photographs in scikit-image's wheel, carried along in .gpu-data/ (`make gpu-wheels` puts it
# there). Results: OUT/bench-imagenet.md. About 5 minutes; gpu_check.sh first if both fit.
#
#   bash scripts/gpu_folders.sh OUT        (the device tool: carry [".whl", ".gpu-data"])
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-folders}}
mkdir -p "$out"
source scripts/gpu_env.sh
if ! compgen -G ".gpu-data/scikit_image-*.whl" >/dev/null; then
    echo "gpu_folders: no scikit-image wheel in .gpu-data/ to cut the test folder from: run"
    echo "             'make gpu-wheels' here and carry .gpu-data along"
    exit 2
fi
mkdir -p "$HOME/.cache/resnet-repro" && cp .gpu-data/scikit_image-*.whl "$HOME/.cache/resnet-repro/"
timeout "${GPU_FOLDERS_BUDGET:-540}" "$py" scripts/bench.py --parts imagenet --repeats 1 \
    --folder "${TMPDIR:-/tmp}/photo-folder-x8" 2>&1 | tee "$out/bench-imagenet.md"
status=${PIPESTATUS[0]}
echo "gpu_folders: $((SECONDS)) s in all; exit $status"
exit "$status"
