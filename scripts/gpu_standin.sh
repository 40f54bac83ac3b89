#!/usr/bin/env bash
# A stand-in of a lent GPU machine's Python, made here to rehearse scripts/gpu_check.sh and
# gpu_figure6.sh before spending device minutes (docs/speed.md, "On a GPU"): Python 3.12 in a
# virtual environment of its own, with the torch and torchvision those machines have (2.11 and
# 0.26), the packages they have that this project's tests use, and no Hydra, OmegaConf or
# submitit. It needs pip to reach PyPI once (about 3 GB: torch's CUDA build); afterwards the
# rehearsal runs with no index at all:
#
#   bash scripts/gpu_standin.sh /tmp/gpu-standin
#   PATH=/tmp/gpu-standin/bin:$PATH PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 \
#       bash scripts/gpu_check.sh /tmp/rehearsal
set -euo pipefail
dir=${1:-/tmp/gpu-standin}
python312=${PYTHON312:-python3.12}
if ! "$python312" -c "" 2>/dev/null; then  # pyenv has it, but not on PATH
    python312=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
    [ -n "$python312" ] || { echo "gpu_standin: no Python 3.12 (set PYTHON312)"; exit 2; }
fi
"$python312" -m venv "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check \
    torch==2.11.0 torchvision==0.26.0 pytest pytest-xdist tensorboard matplotlib tqdm pyyaml \
    cloudpickle packaging setuptools wheel
"$dir/bin/python" -c "import torch, torchvision; print('stand-in:', torch.__version__, torchvision.__version__)"
