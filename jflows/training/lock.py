"""A lock on a run directory, so that two trainings never write to the same run at once.

The lock is ``fcntl.flock`` on ``DIR/.lock``, which holds the pid and host of its owner. The
kernel releases a flock when its process dies (even by SIGKILL), so a lock left by a killed
run never blocks the rerun that resumes it: the file stays, the lock does not. Within one
process the lock is re-entrant (``jflows train`` holds it around ``fit``, which takes it too).

Example:
    >>> with run_lock("runs/a"):
    ...     pass  # train, write config.json, checkpoints, pictures
    >>> import os
    >>> os.path.exists("runs/a/.lock")  # the file stays, the lock is released
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Iterator

from jflows.errors import RunLockedError

LOCK_FILE = ".lock"
"""Name of the lock file inside a run directory."""

_held: dict[str, tuple[int, int]] = {}  # real path of the directory -> (fd, depth)
_guard = threading.Lock()


def _owner(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read().split()
    except OSError:
        text = []
    if len(text) >= 2:
        return f"process {text[0]} on host {text[1]}"
    return "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Holds the lock of ``run_dir`` (created if absent) for the ``with`` block.

    Raises:
        RunLockedError: another process holds it; the message names the directory and the
            holder's pid and host.
    """
    os.makedirs(run_dir, exist_ok=True)
    key = os.path.realpath(run_dir)
    path = os.path.join(key, LOCK_FILE)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"run directory {os.fspath(run_dir)!r} is in use by {_owner(path)} (it holds "
                    f"{path}); wait for that training to finish or stop it, or pass another "
                    f"--out directory"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
