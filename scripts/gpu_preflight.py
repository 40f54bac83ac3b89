"""What scripts/gpu_check.sh and gpu_figure6.sh need, checked before they spend a GPU machine's
minutes: every package imports (the machine's own, or .whl/'s), Hydra finds the local launcher,
torchrun and resnet-train start, and the torch there is one this code has run on. Writes what
the machine is to OUT/machine.txt. Exit 2, naming everything missing, when something is.

    python scripts/gpu_preflight.py OUT        (after scripts/gpu_env.sh has set PYTHONPATH)
"""

import importlib
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# module: where it comes from when it is missing
NEEDED = {
    "torch": "the machine's Python",
    "torchvision": "the machine's Python",
    "pytest": "the machine's Python",
    "tensorboard": "the machine's Python",
    "matplotlib": "the machine's Python",
    "tqdm": "the machine's Python",
    "yaml": "the machine's Python (PyYAML)",
    "cloudpickle": "the machine's Python",
    "hydra": ".whl/ (make gpu-wheels)",
    "omegaconf": ".whl/ (make gpu-wheels)",
    "antlr4": ".whl/ (make gpu-wheels: built from its source archive)",
    "submitit": ".whl/ (make gpu-wheels)",
    "hydra_plugins.hydra_submitit_launcher": ".whl/ (make gpu-wheels)",
    "resnet_repro": "the checkout, on PYTHONPATH (scripts/gpu_env.sh)",
}
# The oldest torch and torchvision this code has run its tests on: the GPU machines' (the
# rehearsal of docs/speed.md, "On a GPU", runs them on a stand-in with these versions).
OLDEST = {"torch": (2, 11), "torchvision": (0, 26)}


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("+")[0].split(".")[:2])


def problems() -> list[str]:
    found = []
    for module, source in NEEDED.items():
        try:
            importlib.import_module(module)
        except Exception as e:  # an import can fail in many ways
            found.append(
                f"{module} does not import ({type(e).__name__}: {e}); it comes from {source}"
            )
    for name, oldest in OLDEST.items():
        module = sys.modules.get(name)
        if module and version_tuple(module.__version__) < oldest:
            found.append(
                f"{name} {module.__version__} is older than {'.'.join(map(str, oldest))}, the "
                "oldest this code has been tested on"
            )
    if not found:
        from hydra.core.plugins import Plugins

        if "hydra_plugins.resnet_repro.LocalLauncher" not in Plugins.instance().class_name_to_class:
            found.append("Hydra does not find hydra/launcher=local (hydra_plugins/resnet_repro)")
        from resnet_repro.entry import command

        for name in ("torchrun", "resnet-train"):
            cmd = [*command(name), "--help"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if r.returncode:
                found.append(f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
    return found


def describe(out: Path) -> str:
    lines = [f"Python {platform.python_version()} at {sys.executable}"]
    for name in ("torch", "torchvision", "hydra", "omegaconf", "submitit"):
        module = sys.modules.get(name)
        lines.append(f"{name} {getattr(module, '__version__', '?') if module else 'missing'}")
    torch = sys.modules.get("torch")
    if torch and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"GPUs: {', '.join(gpus)}")
    else:
        lines.append("GPUs: none that PyTorch sees (the cuda tests will be skipped)")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        lines.append(smi.stdout.strip())
    cpu = next(
        (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln), ""
    )
    lines.append(
        f"CPU: {cpu.partition(':')[2].strip()}, {len(__import__('os').sched_getaffinity(0))} cores"
    )
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.txt").write_text(text)
    return text


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    found = problems()
    print(describe(out), end="")
    if found:
        print("gpu_preflight: not ready:", *(f"  - {p}" for p in found), sep="\n", file=sys.stderr)
        sys.exit(2)
    print("gpu_preflight: ready")


if __name__ == "__main__":
    main()
