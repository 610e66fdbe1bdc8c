"""One writer per run folder: an advisory lock on a file in the folder, held for as long as a trainer writes there.

A second trainer on the same folder, a ``--resume`` while the run is still training, or a sweep started again
while its old children still run: each is refused with a message naming the holder (pid, host, start time,
command). The lock is an ``flock`` on an open file, so the operating system frees it when the holder dies, even
by SIGKILL: a stale lock file from a killed process never blocks anyone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .rundir import RunDir


class RunFolderBusy(RuntimeError):
    """The run folder is being written by another process; the message names it and what to do."""


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock (creating the folder) or raises ``RunFolderBusy``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderBusy(f"{self.folder} is a file, not a run folder; choose a folder path for --out")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(RunDir(self.folder).lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderBusy(
                f"cannot write in {self.folder} ({e.strerror or e}); choose a folder you can write to for --out"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"{self.folder} is being written by another greedymm process ({holder}); wait for it to finish or "
                "stop it, then run again (a process that died frees the folder by itself), or choose another --out"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file frees the flock; the file stays, unlocked
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: {info.get('command', '')}"
