#!/usr/bin/env bash
# The GPU checks in one call, for a GPU machine that is lent for minutes (docs/speed.md, "On a
# GPU"): install what that machine lacks from .whl/ (scripts/gpu_env.sh), check that everything
# imports and starts (scripts/gpu_preflight.py), then the `cuda` tests, the fast tests, and the
# GPU benchmark, each within its share of a budget that ends the whole call in 9 minutes.
# Results go to OUT ($1, or $OUT): machine.txt, tests-cuda.log, tests-fast.log, bench-gpu.md,
# bench-sweep.md.
#
#   bash scripts/gpu_check.sh OUT          (the device tool: carry [".whl", ".gpu-data"])
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
# Seconds for the whole call, start-up included: 8.5 minutes on a GPU machine (16 cores: the
# fast tests take 8 workers); a 2-core stand-in needs longer (GPU_CHECK_BUDGET=1800).
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-510}))
source scripts/gpu_env.sh

# A step's seconds: at most $1, and what is left after $2 seconds kept for the steps after it
upto() { local t=$((deadline - SECONDS - $2)); t=$((t < $1 ? t : $1)); echo $((t > 10 ? t : 10)); }
status=0
pytest=("$py" -m pytest -q -p no:cacheprovider -o addopts= --durations=15 tests)

# What only this machine can run, first: every `cuda` test (the others run here as in CI: on
# the CPU, with the GPUs hidden from them, tests/conftest.py).
timeout "$(upto 240 200)" "${pytest[@]}" -m cuda 2>&1 | tee "$out/tests-cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The fast tests, on as many workers as the cores allow where pytest-xdist is installed.
workers=()
if "$py" -c "import xdist" 2>/dev/null; then
    workers=(-n "$(( $(nproc) > 8 ? 8 : $(nproc) ))")
fi
timeout "$(upto 100000 90)" "${pytest[@]}" -m "not slow and not cuda" "${workers[@]}" 2>&1 \
    | tee "$out/tests-fast.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The GPU benchmark in the time left: resnet-train against the classic pipeline and the settings'
# contributions (ResNet-20 and 56), then runs side by side on one GPU.
timeout "$(upto 60 30)" "$py" scripts/bench.py --parts gpu --depths 20 56 --repeats 1 2>&1 \
    | tee "$out/bench-gpu.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout "$(upto 100000 0)" "$py" scripts/bench.py --parts sweep --repeats 1 2>&1 \
    | tee "$out/bench-sweep.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "gpu_check: $((SECONDS)) s in all; exit $status"
exit $status
