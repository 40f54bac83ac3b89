"""resnet-train started from a warm interpreter, for the suite's hundreds of short runs.

A fresh resnet-train spends about 5 s of CPU before it reads its first override: importing
torch, Hydra and the package (3 s), then torch._dynamo, which torch imports when the first
optimizer is built (2 s). The suite starts a few hundred runs, and that was most of its time.
Here one process per pytest worker (the zygote, this file run as a script) imports all that
once; for each run it forks a child that becomes the command as its console script would
start it: its own arguments, environment, working directory, standard output and error, and
the zygote's untouched signal handlers, which are a new interpreter's. The child then runs
the console script's entry point and exits as the script would, atexit handlers and all.

run() is what conftest.run_cli calls. It starts real processes instead where a warm one could
differ: an environment variable that torch reads when it is imported (TORCH_LOGS, thread
counts, ...) set otherwise than in the zygote, or no installed console script to stand for.
Tests about how a process starts (a Ctrl-C while importing, a terminal, torchrun and srun,
the installed wheel, signals to a running process) start real processes themselves.
"""

import os
import pickle
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# What a forked child would not take from its own environment: read at import by torch, OpenMP,
# CUDA or Python itself. A run whose environment differs from the zygote's in one of these
# starts as a real process.
AT_IMPORT = ("TORCH", "OMP_", "MKL_", "KMP_", "CUDA", "NCCL", "PYTHON", "LD_", "GOMP")


class Zygote:
    """The test side: starts the zygote on first use, and runs commands through it."""

    def __init__(self, script: str):
        self.script, self.proc, self.address, self.env = script, None, None, {}

    def can_run(self, env: dict) -> bool:
        """Whether a child of the zygote would be the process a new one would be: the same
        values (or none) of everything read at import."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        keys = {k for k in {*env, *self.env} if k.startswith(AT_IMPORT)} - {"PYTHONUNBUFFERED"}
        return all(env.get(k) == self.env.get(k) for k in keys)

    def start(self) -> None:
        self.env = dict(os.environ)
        self.address = f"resnet-repro-warm-{os.getpid()}-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(
            [sys.executable, "-u", __file__, self.address],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env | {"PYTHONUNBUFFERED": "1"},
        )
        if self.proc.stderr.readline() != b"ready\n":  # imports done, listening
            raise RuntimeError(f"the warm zygote did not start: {self.proc.stderr.read()!r}")

    def run(self, args, env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = pickle.dumps({"argv": [self.script, *args], "env": env, "cwd": str(cwd)})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect("\0" + self.address)  # an abstract socket: no file
            socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [out_w, err_w])
            os.close(out_w), os.close(err_w)
            pid = int.from_bytes(recv_exactly(conn, 8), "big")
            try:
                out, err = read_both(out_r, err_r, time.monotonic() + timeout)
                code = int.from_bytes(recv_exactly(conn, 8), "big", signed=True)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(args, timeout) from None
        return subprocess.CompletedProcess([self.script, *args], code, out, err)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the warm zygote went away")
        data += chunk
    return data


def read_both(out_r: int, err_r: int, deadline: float) -> tuple[str, str]:
    """Both pipes to their ends (the run and every process it started closed them)."""
    chunks = {out_r: [], err_r: []}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        sel.register(fd, selectors.EVENT_READ)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for key, _ in sel.select(timeout=left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
        os.close(out_r), os.close(err_r)
    return tuple(b"".join(chunks[fd]).decode(errors="replace") for fd in (out_r, err_r))


# The zygote's side.


def serve(address: str) -> dict:
    """Accept requests for ever; return (in a forked child) the request it is to become."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)
    listener.listen(16)
    parent = os.getppid()
    running = {}  # pid -> the connection its exit status goes to
    print("ready", file=sys.stderr, flush=True)
    while os.getppid() == parent:  # the test process is gone: so is the zygote
        readable, _, _ = select.select([listener], [], [], 0.2)
        if readable:
            conn, _ = listener.accept()
            head, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
            size = int.from_bytes(head[:8], "big")
            body = head[8:]
            while len(body) < size:
                body += conn.recv(size - len(body))
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in running.values():
                    other.close()
                conn.close()
                return {**pickle.loads(body), "fds": fds}
            for fd in fds:
                os.close(fd)
            conn.sendall(pid.to_bytes(8, "big"))
            running[pid] = conn
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn = running.pop(pid)
                try:
                    conn.sendall(os.waitstatus_to_exitcode(status).to_bytes(8, "big", signed=True))
                except OSError:
                    pass
                conn.close()
    sys.exit(0)


def become(request: dict) -> None:
    """This forked child becomes the requested command's process."""
    out, err = request["fds"]
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0), os.dup2(out, 1), os.dup2(err, 2)
    for fd in (devnull, out, err):
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = request["argv"]
    sys.path[0] = str(Path(request["argv"][0]).parent)  # as for the console script


def preload() -> None:
    """What every run imports, and torch._dynamo, which torch imports at the first optimizer."""
    import torch._dynamo  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import torchvision  # noqa: F401  (image folders)
    import torchvision.datasets  # noqa: F401
    import torchvision.transforms.v2  # noqa: F401

    import resnet_repro.cli  # noqa: F401
    import resnet_repro.entry  # noqa: F401


if __name__ == "__main__":
    preload()
    request = serve(sys.argv[1])
    become(request)
    from resnet_repro.entry import main

    sys.exit(main())
