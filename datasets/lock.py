"""One writer per store: an exclusive ``flock`` on ``STORE/.writer.lock``.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a
crashed writer never leaves a store locked. A second writer gets a :class:`StoreLockedError`
naming the process that holds it. Readers take no lock: they see committed episodes only.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = ".writer.lock"


class StoreLockedError(RuntimeError):
    """Another process is writing this store."""


class WriterLock:
    """Hold the store's writer lock until :meth:`release` (or process exit)."""

    def __init__(self, store: str | Path):
        self.path = Path(store) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLockedError(f"{self.path.parent} is being written by {holder}: one writer per store. "
                                   "Wait for it to finish, or write to another store and `wfm-sim dataset merge` "
                                   "them afterwards") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self):
        self.release()
