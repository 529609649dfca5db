"""The store's writer lock: one build (or other writer) at a time.

The lock is a small JSON file naming its holder, refreshed by a heartbeat. A second writer
refuses with a message naming the holder. A lock whose holder died (its process is gone on this
host, or its heartbeat is older than ``stale_after`` seconds) is taken over, so a SIGKILLed build
never blocks the next one for long.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from featurestore.errors import StoreBusyError
from featurestore.urls import atomic_write

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """Context manager holding the lock at ``path`` on ``fs`` while the block runs."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, purpose: str,
                 stale_after: float = STALE_AFTER_S):
        self.fs, self.path, self.purpose, self.stale_after = fs, path, purpose, stale_after
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "purpose": self.purpose, "command": " ".join(sys.argv),
                           "heartbeat": time.time()}).encode()

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # being written right now: treat as held

    def _is_stale(self, holder: dict) -> bool:
        if not holder:
            return False
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder["pid"])):
            return True
        return time.time() - float(holder.get("heartbeat", 0)) > self.stale_after

    def _try_create(self) -> bool:
        if isinstance(self.fs, LocalFileSystem):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._record())
            return True
        # Object stores: write, then read back; the last writer wins and the loser sees it.
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, self._record())
        time.sleep(0.2)
        holder = self._holder()
        return bool(holder) and holder.get("token") == self.token

    def acquire(self) -> None:
        for _ in range(2):
            if self._try_create():
                self._start_heartbeat()
                return
            holder = self._holder()
            if holder is not None and not self._is_stale(holder):
                age = time.time() - float(holder.get("heartbeat", time.time()))
                raise StoreBusyError(
                    f"the store is being written by another {holder.get('purpose', 'writer')} "
                    f"(pid {holder.get('pid')} on {holder.get('host')}, heartbeat {age:.0f} s "
                    f"ago: {holder.get('command', '')!r}); wait for it to finish, or remove "
                    f"{self.path} if that process is gone")
            try:
                self.fs.rm_file(self.path)  # the holder died: take over
            except FileNotFoundError:
                pass
        raise StoreBusyError(f"could not take the writer lock {self.path}")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    atomic_write(self.fs, self.path, self._record())
                except OSError:
                    pass  # the next beat retries; a lock too old is only taken over, not lost
        self._thread = threading.Thread(target=beat, name="featurestore-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            self.fs.rm_file(self.path)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
