#!/usr/bin/env bash
# The GPU checks in one run, for a GPU machine that is lent for minutes (docs/speed.md, "On a
# GPU"): install against that machine's own PyTorch, run the fast tests and every `cuda` test,
# then the GPU part of the benchmark. About 8 minutes on one H200; results go to $1 (or $OUT).
#
#   bash scripts/gpu_check.sh results/
#
# Such machines often have no network: what their Python lacks (hydra-core, omegaconf,
# antlr4-python3-runtime, the submitit launcher) is installed from wheels put in .whl/
# beforehand, e.g.
#   pip download --no-deps -d .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \
#       hydra-submitit-launcher==1.2.0 submitit==1.5.4 cloudpickle
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
venv=${TMPDIR:-/tmp}/resnet-repro-gpu
python3 -m venv --system-site-packages "$venv" || exit 1
py=$venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps .whl/*.whl || exit 1
fi
# --no-deps: the machine's torch stays (the pinned one would be a multi-GB download)
# (compat: Hydra's plugin scan finds hydra/launcher=local in the checkout; see the Makefile)
$py -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat \
    || exit 1
{
    nvidia-smi
    $py -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0))'
    lscpu | grep -E "Model name|^CPU\(s\)"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

status=0
export PYTHONUNBUFFERED=1
timeout 360 $py -m pytest -q -p no:cacheprovider -m "cuda or not slow" --durations=15 \
    -o addopts="" tests 2>&1 | tee "$out/tests.log" || status=1
timeout 240 $py scripts/bench.py --parts gpu --depths 20 56 110 --repeats 1 \
    2>&1 | tee "$out/bench-gpu.md" || status=1
timeout 180 $py scripts/bench.py --parts sweep --repeats 1 2>&1 | tee "$out/bench-sweep.md" \
    || status=1
exit $status
