#!/usr/bin/env bash
# The Python packages a lent GPU machine lacks, as wheels in .whl/ (git-ignored), for
# scripts/gpu_check.sh to install there. That machine has Python 3.12 with torch, torchvision,
# pytest, pytest-xdist, tensorboard, matplotlib, tqdm, PyYAML and cloudpickle, and no network;
# it lacks Hydra, OmegaConf (and its antlr4 runtime) and submitit. Run this here, where pip
# reaches PyPI; the device tool carries the folder along (carry: [".whl"]).
#
#   make gpu-wheels            (docs/speed.md, "On a GPU")
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
rm -rf .whl
mkdir .whl
# Pure-Python wheels (py3-none-any), the versions this project is tested with here. One version
# of each: two would stop the whole install there.
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 hydra-submitit-launcher==1.2.0
# antlr4-python3-runtime 4.9.3, which OmegaConf 2.3 needs exactly, is published as a source
# archive only, which no --only-binary download (nor `pip install .whl/*.whl`) picks up: build
# it here into a pure-Python wheel.
"$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-binary=:all: -w .whl \
    antlr4-python3-runtime==4.9.3
# TurboJPEG for data.loader=boxes (the jpeg extra), a binary wheel for that machine's Python
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl \
    turbojpeg==0.0.2
ls .whl
# scikit-image's wheel, whose photographs scripts/photo_folder.py cuts the test folder of
# scripts/gpu_folders.sh from (read as a zip archive, not installed: any platform's will do)
mkdir -p .gpu-data
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d .gpu-data scikit-image==0.26.0
ls .gpu-data
