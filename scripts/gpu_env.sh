# Sourced by scripts/gpu_check.sh and scripts/gpu_figure6.sh on a lent GPU machine (or its
# stand-in): the packages that machine lacks, installed from .whl/ (scripts/gpu_wheels.sh) into a
# folder on PYTHONPATH, and the checkout itself on PYTHONPATH; then the preflight. No virtual
# environment: the machine's Python is one already, and a venv made from it would not see its
# torch. Sets $py (that Python) and $site; stops the calling script (exit 2) with what is missing.
py=${PYTHON:-python3}
site=${TMPDIR:-/tmp}/resnet-repro-site
if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu: .whl/ holds no wheels. Here, run 'make gpu-wheels' where pip reaches PyPI; on the"
    echo "     GPU machine, carry .whl along (the device tool's carry: [\".whl\"])."
    exit 2
fi
if [ ! -f "$site/.installed" ] || [ .whl -nt "$site/.installed" ]; then
    rm -rf "$site"
    "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
        --no-cache-dir --target "$site" .whl/*.whl || { echo "gpu: installing .whl/ failed"; exit 2; }
    touch "$site/.installed"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The real CIFAR-10 where it travelled along (.gpu-data/, git-ignored): the benchmark and the
# reproduction read it.
if [ -z "${RESNET_REPRO_CIFAR10_JPEG:-}" ] && [ -f .gpu-data/cifar10-jpeg.tar.gz ]; then
    export RESNET_REPRO_CIFAR10_JPEG=$PWD/.gpu-data/cifar10-jpeg.tar.gz
fi
"$py" scripts/gpu_preflight.py "${out:-.}" || exit 2
