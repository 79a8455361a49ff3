"""Child processes of the launcher: start with a log file, wait for health, stop in order."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


class LaunchError(RuntimeError):
    """A component failed to start or become healthy; the message says where to look."""


@dataclass
class Proc:
    """A started component: its name, process and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid


def start(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Proc:
    """Start argv in its own session (Ctrl-C reaches only the launcher) logging to a file
    that only the owner can read, as is every file the component creates itself."""
    private_dir(log_dir)
    log = log_dir / f"{name}.log"
    with open_private(log, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    return Proc(name, popen, log, stop_signal)


# Logs and state can hold request details and secrets: owner only.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create path (mode 0700), or make an existing one 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def open_private(path: Path, mode: str) -> IO[Any]:
    """Open a file for writing that only its owner can read (also when it exists)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


def write_private(path: Path, text: str) -> None:
    """Replace path's contents, readable by its owner only."""
    with open_private(path, "w") as out:
        out.write(text)


@contextmanager
def stop_on_error(proc: Proc) -> Iterator[Proc]:
    """Stop a just-started process if what follows (health wait, set-up) fails, so a
    failed start never leaves it running untracked."""
    try:
        yield proc
    except BaseException:
        stop(proc)
        raise


def run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    """Run a set-up command to completion; LaunchError with its output when it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise LaunchError(f"{what} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(
    proc: Proc | None, check: Callable[[], bool], *, what: str, timeout: float = 60.0
) -> None:
    """Poll `check` until it passes; fail fast if the process exits first."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if proc is not None and proc.popen.poll() is not None:
            raise LaunchError(
                f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                f"log {proc.log}:\n{_tail(proc.log)}"
            )
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            where = f"; log {proc.log}:\n{_tail(proc.log)}" if proc else ""
            raise LaunchError(f"timed out after {timeout:.0f}s waiting for {what}{where}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not bind host:port now. Binds as servers do (SO_REUSEADDR,
    so TIME_WAIT leftovers do not count) but without SO_REUSEPORT, so a listener that
    set it (Envoy does by default) still counts as holding the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a process group (or process) and wait for it to go, then SIGKILL."""
    try:
        os.killpg(pid, sig)  # the component and anything it spawned
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop(proc: Proc) -> None:
    """Stop a process this launcher started, and reap it."""
    stop_pid(proc.pid, proc.stop_signal)
    reap(proc)


def reap(proc: Proc) -> None:
    """Collect the exit status of a stopped child (no zombie, no ResourceWarning)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=1)


def alive(pid: int) -> bool:
    """Whether the pid runs (and is not a zombie we must still reap)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
