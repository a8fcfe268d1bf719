"""One writer per output folder.

``folder_lock(folder)`` holds an operating-system file lock (``filelock``: ``flock`` on Unix) on
``folder/.avid.lock`` for the life of a job: a second writer fails at once with one line naming the
holder, and the kernel drops the lock when its process ends, even by ``kill -9``, so a lock file
left behind never blocks anyone. The same process may take the same folder's lock again (a job
that calls another job on the same folder), and so may the further ranks of a multi-device job
that its holder launched. ``@locked(folder_of)`` does the same for a function.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

LOCK_NAME = ".avid.lock"


class FolderBusy(RuntimeError):
    """Another process is writing to the folder."""


def writable_folder(folder: str | Path) -> Path:
    """``folder``, created if needed; a clear ``ValueError`` when it cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".avid-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write to {folder}: {e.strerror or e}; choose another folder") from None
    return folder


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s lock (creating the folder); ``FolderBusy`` at once if another process holds it."""
    path = Path(folder) / LOCK_NAME
    if path.exists() and _launched_rank_of(path.read_text().strip()):  # rank 0 holds it for every rank
        yield Path(folder)
        return
    folder = writable_folder(folder)
    lock = FileLock(path, timeout=0, is_singleton=True)
    again = lock.is_locked  # this process holds it already
    try:
        lock.acquire()
    except Timeout:
        raise _busy(folder) from None
    try:
        if not again:
            path.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: "
                            f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))}")
        yield folder
    finally:
        lock.release()


def _busy(folder: Path) -> FolderBusy:
    path = folder / LOCK_NAME
    holder = path.read_text().strip() if path.exists() else ""
    return FolderBusy(f"{folder} is in use by another avid process ({holder or 'unknown'}); wait for it to "
                      "finish or choose another folder")


def check_not_busy(folder: str | Path) -> None:
    """For a reader: ``FolderBusy`` when another process holds ``folder``'s lock (it is being written).
    Creates nothing; a folder this process holds, or cannot lock (read-only), passes."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return
    lock = FileLock(path, timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise _busy(Path(folder)) from None
    except OSError:
        return
    lock.release()


def _launched_rank_of(holder: str) -> bool:
    """Whether this process is a rank > 0 that the lock's holder started: Lightning's DDP launcher
    runs the same command again for each further rank (``LOCAL_RANK`` set) from rank 0's process."""
    rank = os.environ.get("LOCAL_RANK") or os.environ.get("RANK") or "0"
    return rank.isdigit() and int(rank) > 0 and holder.startswith(f"pid {os.getppid()} on {socket.gethostname()} ")


def locked(folder_of: Callable[[dict[str, Any]], str | Path]):
    """Decorator: run the function holding the lock of ``folder_of(arguments by name)``."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            with folder_lock(folder_of(bound.arguments)):
                return fn(*args, **kwargs)

        return inner

    return wrap
