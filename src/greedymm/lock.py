"""One writer per run folder: an advisory lock on a file in the folder, held for as long as a trainer writes there.

A second trainer on the same folder, a ``--resume`` while the run is still training, or a sweep started again
while its old children still run: each is refused with a message naming the holder (pid, host, start time,
command). The lock is an ``flock`` on an open file, so the operating system frees it when the holder dies, even
by SIGKILL: a stale lock file from a killed process never blocks anyone. The lock file is opened without following
a link and must be a plain file of its own (no second hard link), since the holder's line is written into it: a
planted one is refused, naming it (``RunFolderError``), and nothing outside the folder is ever written.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from .rundir import RunDir, RunFolderError, file_problem


class RunFolderBusy(RunFolderError):
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
        path = RunDir(self.folder).lock_file
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderBusy(
                f"cannot write in {self.folder} ({e.strerror or e}); choose a folder you can write to for --out"
            ) from e
        if problem := file_problem(path, in_place=True, writing=True):
            raise RunFolderError(problem)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EISDIR):  # planted between the check and the open
                raise RunFolderError(file_problem(path, in_place=True) or f"{path} is not a file") from None
            where = f"the lock file {path}" if path.exists() else f"in {self.folder}"
            raise RunFolderBusy(
                f"cannot write {where} ({e.strerror or e}); make it writable, or choose a folder you can write to for "
                "--out"
            ) from e
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:  # planted between the check and the open
            os.close(fd)
            raise RunFolderError(file_problem(path, in_place=True) or f"{path} is not a lock file of its own")
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
