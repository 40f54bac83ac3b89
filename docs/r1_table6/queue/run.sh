#!/bin/bash
# The controls of docs/r1_table6.md, then ResNet-32 at [R1]'s schedule. Resumable: rerun it.
# Code: the resnet-repro wheel in ~/runs/venv (commit in ~/runs/CODE_VERSION).
set -u
cd ~/runs/r1_table6_short
V=~/runs/venv/bin
DATA="data.root=$HOME/data/cifar10 data.download=false"
SHORT="model=resnet20 schedule.iterations=3200 schedule.milestones=[1600,2400] trainer.eval_every=400 trainer.seed=0,1,2"
for s in 0 1 2; do
  [ -f classic/seed$s.json ] && continue
  echo "$(date -u +%T) classic seed $s"
  $V/python classic_cifar.py --root ~/data/cifar10 --train --iterations 3200 --milestones 1600 2400 \
      --eval-every 400 --seed $s --out classic/seed$s.json || exit 1
done
for p in fp32 bf16; do
  echo "$(date -u +%T) resnet-train $p sweep"
  $V/resnet-train -m $SHORT trainer.precision=$p $DATA hydra.sweep.dir=$HOME/runs/r1_table6_short/$p || exit 1
done
echo "$(date -u +%T) resnet32 bf16"
$V/resnet-train model=resnet32 trainer.precision=bf16 $DATA hydra.run.dir=$HOME/runs/r1_table6/resnet32 || exit 1
echo "$(date -u +%T) all done"
