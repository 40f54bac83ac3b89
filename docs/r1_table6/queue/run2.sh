#!/bin/bash
# The queue after run.sh (which ran the classic arm and the fp32 sweep): the bf16 arm, then
# resnet-train fp32 with trainer.channels_last=false on seeds 0 and 1 (does the memory format
# explain the classic arm's lower error?), then ResNet-32. Resumable: rerun it.
set -u
cd ~/runs/r1_table6_short
while pgrep -f "resnet-train -m model=resnet20" >/dev/null; do sleep 10; done
V=~/runs/venv/bin
DATA="data.root=$HOME/data/cifar10 data.download=false"
SHORT="model=resnet20 schedule.iterations=3200 schedule.milestones=[1600,2400] trainer.eval_every=400"
for p in fp32 bf16; do
  echo "$(date -u +%T) resnet-train $p sweep"
  $V/resnet-train -m $SHORT trainer.seed=0,1,2 trainer.precision=$p $DATA hydra.sweep.dir=$HOME/runs/r1_table6_short/$p || exit 1
done
echo "$(date -u +%T) resnet-train fp32 NCHW sweep"
$V/resnet-train -m $SHORT trainer.seed=0,1 trainer.precision=fp32 trainer.channels_last=false $DATA hydra.sweep.dir=$HOME/runs/r1_table6_short/fp32_nchw || exit 1
echo "$(date -u +%T) resnet32 bf16"
$V/resnet-train model=resnet32 trainer.precision=bf16 $DATA hydra.run.dir=$HOME/runs/r1_table6/resnet32 || exit 1
echo "$(date -u +%T) all done"
