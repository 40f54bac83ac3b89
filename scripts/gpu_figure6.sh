#!/usr/bin/env bash
# [R1] figure 6 at the paper's schedule, on one lent GPU: plain-20, ResNet-20, plain-56 and
# ResNet-56 (experiment=r1_cifar's four of them), 64,000 iterations each, side by side on the GPU
# (hydra/launcher=local, 4 runs on it), on the real CIFAR-10 carried along in .gpu-data/. Before
# the call's limit it stops them, each with a checkpoint; run it again while the machine is warm
# to go on (the runs live in /tmp there). What the runs wrote (config.yaml, metrics.jsonl,
# summary.json, train.log; not their checkpoints) comes back as OUT/figure6-runs.tar.gz, for
# `make figures RUNS=...` here. Run scripts/gpu_check.sh first: this takes what time is left.
#
#   bash scripts/gpu_figure6.sh OUT [ITERATIONS]   (device tool: carry [".whl", ".gpu-data"])
#   ITERATIONS: 64000, [R1]'s; the lr drops at 1/2 and 3/4 of it (a rehearsal gives a few)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-figure6}}
iterations=${2:-64000}
mkdir -p "$out"
deadline=$((SECONDS + ${GPU_RUN_BUDGET:-540}))  # seconds; the runs stop 60 s before
source scripts/gpu_env.sh
if [ -z "${RESNET_REPRO_CIFAR10_JPEG:-}" ]; then
    echo "gpu_figure6: no CIFAR-10: copy cifar10-jpeg.tar.gz into .gpu-data/ and carry it along"
    exit 2
fi
data=${TMPDIR:-/tmp}/cifar10-jpeg
[ -d "$data/train" ] || { mkdir -p "$data" && tar xzf "$RESNET_REPRO_CIFAR10_JPEG" -C "$data"; } \
    || exit 2
runs=${GPU_FIGURE6_RUNS:-${TMPDIR:-/tmp}/r1-figure6}
"$py" -c "from resnet_repro.entry import main; main()" -m experiment=r1_cifar \
    model=plain20,resnet20,plain56,resnet56 "data.root=$data" data.download=false \
    "schedule.iterations=$iterations" \
    "schedule.milestones=[$((iterations / 2)),$((iterations * 3 / 4))]" \
    hydra/launcher=local hydra.launcher.n_jobs=4 hydra.launcher.runs_per_gpu=4 \
    "hydra.sweep.dir=$runs" 2>&1 | tee "$out/sweep.log" &
sweep=$(jobs -p | tail -1)
while kill -0 "$sweep" 2>/dev/null; do
    if [ $((deadline - SECONDS)) -lt 60 ]; then  # each run saves a checkpoint and stops
        pkill -TERM -f "resnet_repro.entry import main; main()" 2>/dev/null
        break
    fi
    sleep 2
done
wait
tar czf "$out/figure6-runs.tar.gz" --exclude=checkpoints --exclude=tensorboard \
    --exclude=.submitit --exclude=.slots -C "$(dirname "$runs")" "$(basename "$runs")"
finished=$(find "$runs" -name summary.json | wc -l)
echo "gpu_figure6: $finished of 4 runs finished in $runs; their records in $out/figure6-runs.tar.gz"
[ "$finished" -eq 4 ]
