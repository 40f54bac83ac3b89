#!/bin/bash
# The page's files from the finished ResNet-32 run and ResNet-20's evidence: run from the
# checkout with its environment (make install) once ResNet-32 has written summary.json.
# ResNet-20's run directory went with the first machine, so its figure 7 is measured from
# the shipped weights (scripts/figure7.py --weights), and its table row from its evidence.
set -eu
RUN=~/runs/r1_table6/resnet32
DATA="data.root=$HOME/data/cifar10 data.download=false"
if [ ! -f $RUN/summary.json ]; then
  echo "finish.sh: ResNet-32 has not finished; its last record: $(tail -1 $RUN/metrics.jsonl)" >&2
  exit 1
fi
B=.venv/bin
$B/python scripts/evidence.py $RUN --out docs/r1_table6/runs
$B/resnet-export $RUN weights/resnet32.pt
make -s figures RUNS="docs/r1_table6/runs/resnet20 $RUN" OUT=docs/r1_table6 \
  ARGS="--weights weights/resnet20.pt"
for net in resnet20 resnet32; do  # the shipped files give the page's test errors again
  $B/resnet-eval weights/$net.pt $DATA --json /tmp/eval_$net.json
done
sha256sum weights/*.pt
