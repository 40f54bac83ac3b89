"""A run directory's files: its name, what was there before a run made it, its lock, and
writes that a crash never leaves half done."""

import fcntl
import hashlib
import io
import os
import shutil
import socket
import stat
import time
from pathlib import Path

import torch


def printable(path) -> str:
    """A path as text that can be printed whatever bytes its name holds (not UTF-8)."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


# What was there before this process made anything (note_before): for each run or sweep
# directory, its deepest folder that existed then, and the names that folder held. Clean-up
# removes only what was not there.
BEFORE: dict[Path, frozenset] = {}


def note_before(path) -> None:
    """Called with a run or sweep directory before Hydra makes it. The first note of a place is
    the one that counts (a second, after Hydra made the folder, is not "before")."""
    here = Path(path).expanduser().resolve()
    if any(p in BEFORE for p in (here, *here.parents)):
        return
    while not here.exists() and here != here.parent:
        here = here.parent
    BEFORE[here] = frozenset(os.listdir(here)) if here.is_dir() else frozenset()


def made_here(path: Path) -> bool:
    """Whether this process created path (noted: what held it did not hold it before). Unknown
    is no: a folder nobody noted may be the user's."""
    path = path.expanduser().resolve()
    for noted in (path, *path.parents):
        if noted in BEFORE:
            return noted != path and path.relative_to(noted).parts[0] not in BEFORE[noted]
    return False


def claim(path) -> None:
    """Count path as made by this process: another rank of the same job saw it absent. Ranks
    start at once, and one may note a shared run directory only after another has made it."""
    here = Path(path).expanduser().resolve()
    BEFORE.pop(here, None)  # noted after it was made: its own listing is not "before"
    listing = BEFORE.get(here.parent)
    if listing is None:
        listing = frozenset(os.listdir(here.parent))
    BEFORE[here.parent] = listing - {here.name}


def unreadable(path) -> str | None:
    """Why a data file cannot be read, or None. Only regular files are read: opening a named
    pipe (or a device) waits for a writer that may never come, and the run would hang."""
    try:
        mode = os.stat(path).st_mode  # through links: a dangling one or a loop fails here
    except OSError as e:
        return e.strerror or type(e).__name__
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISDIR: "a folder", stat.S_ISSOCK: "a socket"}
    kind = next((k for test, k in kinds.items() if test(mode)), "a device")
    return f"not a regular file but {kind}"


def atomic_save(obj, path: Path, previous: Path | None = None) -> None:
    """torch.save to a temporary file beside path, synced, then renamed: a crash never leaves
    half a file. The file path held moves to `previous` first, if given. The temporary name is
    the process's own, so that processes writing the same file (the ranks of several nodes
    building one data cache) never write into each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        # Serialised in memory first: torch.save reports a failed write to a file with an
        # internal message, where a plain write says what happened (No space left on device).
        data = io.BytesIO()
        torch.save(obj, data)
        with open(tmp, "wb") as f:
            f.write(data.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException:  # a full disk, a Ctrl-C: no half file stays behind
        tmp.unlink(missing_ok=True)
        raise


def sync_folder(folder: Path) -> None:
    """Make the renames durable: they live in the folder's own entry."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_writes(path: Path, quiet_for: float = 60) -> None:
    """Temporary files of atomic_save(path) that a killed process left (up to the size of the
    file each): those whose process is gone from this machine and that have not grown for
    quiet_for seconds. (The age keeps a file that another node is still writing, where the data
    folder is shared.)"""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        try:
            pid = int(tmp.name[len(path.name) + 1 : -len(".tmp")])
            idle = time.time() - tmp.stat().st_mtime
        except (ValueError, OSError):
            continue
        if idle > quiet_for and not alive(pid):
            tmp.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class FileLock:
    """An exclusive lock on a file (flock), held until release() or the process's end, however
    it ends: the kernel drops it, so a killed process never leaves it held. Taking it
    (constructing one) raises Busy, naming the holder, when another process holds it."""

    class Busy(Exception):
        pass

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise FileLock.Busy(holder or "another process") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


class RunLock(FileLock):
    """The lock on a run directory (its .lock file), held while a run uses it."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(run_dir / self.NAME)


def run_name(clock: str, overrides: str | None = None, env=os.environ) -> str:
    """The run directory's name, one that a launcher's restart of the same job computes again,
    so that the restart resumes the run instead of starting over in a new folder:
    - under SLURM, the job id (a requeued job keeps it; an array task adds its index), then for
      a single run the command's overrides, so that several commands of one job (an salloc
      session) stay apart;
    - under torchrun, its run id (--rdzv-id, or the one --standalone draws per torchrun), else
      the start time of torchrun's agent: it outlives the workers it restarts;
    - otherwise the time now, formatted by clock (Hydra's default naming)."""
    if "SLURM_JOB_ID" in env:
        array = env.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{env.get('SLURM_ARRAY_TASK_ID')}" if array else env["SLURM_JOB_ID"]
        if overrides is None:  # a sweep: its runs have folders of their own below
            return f"slurm-{job}"
        if len(overrides) > 100 or "/" in overrides:  # a folder name, not a path
            overrides = hashlib.blake2b(overrides.encode(), digest_size=6).hexdigest()
        return f"slurm-{job}/{overrides or 'defaults'}"
    run_id = env.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    started = process_start(os.getppid()) if run_id == "none" else None
    return time.strftime(clock, time.localtime(started))  # None: now


def process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: ticks after boot
        boot = next(int(ln.split()[1]) for ln in open("/proc/stat") if ln.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def staging_dir(run_dir: Path) -> Path:
    """Where Hydra writes this process's .hydra/ files (conf/config.yaml): they become the run
    directory's .hydra/ only once its settings are accepted, so that a refused resumption leaves
    the files that describe the run's checkpoint as they were."""
    return run_dir / f".hydra-{os.getpid()}"


def commit_hydra_files(run_dir: Path) -> None:
    """Called holding the run's lock: this process's staged .hydra/ files replace the run's,
    and any staged by processes that were killed go."""
    staged = staging_dir(run_dir)
    if staged.is_dir():
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        os.replace(staged, run_dir / ".hydra")
    for other in run_dir.glob(".hydra-*"):
        shutil.rmtree(other, ignore_errors=True)


def untouched(name: str) -> bool:
    return name in (".hydra", "train.log", RunLock.NAME) or name.startswith(".hydra-")


def remove_if_untouched(run_dir: Path) -> None:
    """A run stopped by a user mistake leaves nothing behind: Hydra has already made its run
    directory with the log and the staged .hydra/; remove them unless the run directory holds
    more, or another process is using it. Only what this process created goes: in a folder
    that was there before (files.BEFORE), just the files it added; otherwise, this process's
    staged files alone."""
    shutil.rmtree(staging_dir(run_dir), ignore_errors=True)
    if Path.cwd().resolve().is_relative_to(run_dir.resolve()) or not run_dir.is_dir():
        return
    try:
        lock = RunLock(run_dir)
    except RunLock.Busy:
        return
    try:
        if made_here(run_dir):
            if all(untouched(p.name) for p in run_dir.iterdir()):
                shutil.rmtree(run_dir, ignore_errors=True)
                remove_empty_parents(run_dir)
        else:
            before = BEFORE.get(run_dir.expanduser().resolve(), frozenset())
            for name in {".lock", "train.log"} - before:  # what Hydra and the lock added
                (run_dir / name).unlink(missing_ok=True)
    finally:
        lock.release()


def remove_if_empty(run_dir: Path) -> None:
    """The directory Hydra made for a rank other than 0 (empty: conf/config.yaml writes
    nothing there); rank 0's, which Hydra fills at once, is never empty. A folder that was
    there before stays."""
    if not made_here(run_dir):
        return
    try:
        run_dir.rmdir()
    except OSError:
        return
    remove_empty_parents(run_dir)


def remove_empty_parents(run_dir: Path) -> None:
    """The folders Hydra made above a run directory (the date folder, outputs/multirun/...),
    if empty; never the working directory or a folder outside it."""
    cwd = Path.cwd().resolve()
    for parent in list(run_dir.resolve().parents)[:2]:
        if parent == cwd or not parent.is_relative_to(cwd) or not made_here(parent):
            break
        # A sweep stopped at its first run by a mistake holds only Hydra's multirun.yaml.
        if parent.is_dir() and {p.name for p in parent.iterdir()} == {"multirun.yaml"}:
            (parent / "multirun.yaml").unlink()
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
