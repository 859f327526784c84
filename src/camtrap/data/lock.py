"""One run folder, one job: two jobs writing one folder interleave checkpoints and results unnoticed.

:class:`RunLock` puts ``FOLDER/.camtrap.lock`` (JSON: host, pid, process start time, job, Ray address,
acquired-at, a random token, a heartbeat) beside the outputs, on disk or object storage, and refuses a
second job while the holder lives, naming it. A dead holder's lock is taken over with a printed note:

* same host: dead when its pid is gone (or a zombie) or now belongs to a process with another start
  time (pid reuse). Exact and immediate.
* another host (a shared mount, object storage): dead when its heartbeat is older than ``stale_after``
  seconds (default 120, env ``CAMTRAP_LOCK_STALE_SECONDS``); the holder rewrites it every
  ``stale_after / 4`` seconds from a daemon thread. "Host" is ``socket.gethostname()``: machines (or
  containers on different machines) that share a hostname would wrongly trust each other's pids.

A local create is exclusive (``O_CREAT | O_EXCL``: of two racing jobs exactly one wins), and a stale
local lock is deleted under a takeover guard (another O_EXCL file), so no job deletes a lock that another
has just retaken. Object storage has no create-if-absent that fsspec offers everywhere, so there a job
writes the lock, re-reads it after ``settle`` seconds and holds it only if its own token is still
there. The race window that leaves: a job that looked before our write was visible and whose write
lands more than ``settle`` seconds after ours also finds its token, and both jobs run (the first finds
the other's token at its next heartbeat: ``lost`` and a warning). With the read-after-write consistency
of S3 and GCS that takes a job stalled ``settle`` seconds between its look and its write: rare, not
impossible. The heartbeat checks the token before each rewrite, with the same kind of shorter window.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import psutil
from fsspec.implementations.local import LocalFileSystem

from camtrap.data import storage
from camtrap.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self

LOCK_NAME = ".camtrap.lock"
STALE_ENV = "CAMTRAP_LOCK_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 120.0


class FolderLockedError(InputError):
    """The run folder is held by a live job; the message names it and what to do."""


@dataclass
class Holder:
    """What a lock file says about the job holding it."""

    host: str
    pid: int
    started: float  # the process's start time (psutil create_time): tells a reused pid apart
    job: str
    ray_address: str | None
    acquired_at: float
    token: str
    heartbeat: float

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder in ``data``; None for an empty or half-written file."""
        try:
            fields = json.loads(data)
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        when = time.localtime(self.acquired_at)
        since = time.strftime("%H:%M:%S" if when[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S", when)
        return f"{self.job} pid {self.pid} on host {self.host} since {since}"


def _create_exclusive(path: str, data: bytes) -> bool:
    """Create a local file only if there is none: of two racing processes exactly one gets True."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _token(holder: Holder | None) -> str | None:
    return holder.token if holder else None


def _ray_address() -> str | None:
    ray = sys.modules.get("ray")  # never import Ray only to fill in a field
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    return os.environ.get("RAY_ADDRESS") or None


def stale_reason(holder: Holder | None, stale_after: float) -> str | None:
    """Why ``holder`` is dead (for the takeover note); None while it may be alive."""
    if holder is None:
        return "the lock file is unreadable"
    if holder.host == socket.gethostname():
        try:
            proc = psutil.Process(holder.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return f"pid {holder.pid} has exited"
            if abs(proc.create_time() - holder.started) > 1.0:
                return f"pid {holder.pid} now belongs to another process"
        except psutil.NoSuchProcess:
            return f"pid {holder.pid} has exited"
        except psutil.AccessDenied:  # another user's live process (macOS hides their start time)
            pass
        return None
    age = time.time() - holder.heartbeat
    return f"its last heartbeat is {age:.0f}s old" if age > stale_after else None


class RunLock:
    """``with RunLock(folder, job="train"):`` holds ``folder`` for this job or raises FolderLockedError."""

    def __init__(self, folder: str, job: str = "train", stale_after: float | None = None,
                 settle: float = 1.0) -> None:
        self.folder, self.job, self.settle = str(folder), job, settle
        self.stale_after = float(stale_after or os.environ.get(STALE_ENV) or DEFAULT_STALE_SECONDS)
        self.path = storage.join(self.folder, LOCK_NAME)
        self._fs, self._inner = storage.get_fs(self.path)
        self._local = isinstance(self._fs, LocalFileSystem)
        self.holder: Holder | None = None
        self.lost = False  # set when another job took the lock over while we held it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def read(self) -> tuple[bool, Holder | None]:
        """Whether a lock file exists, and its holder (None if it stays unreadable for half a second)."""
        for _ in range(5):  # a local O_EXCL create is empty for an instant before its content lands
            try:
                holder = Holder.parse(storage.read_bytes(self.path))
            except FileNotFoundError:
                return False, None
            if holder is not None:
                return True, holder
            time.sleep(0.1)
        return True, None

    def acquire(self) -> None:
        now = time.time()
        me = Holder(socket.gethostname(), os.getpid(), psutil.Process().create_time(), self.job,
                    _ray_address(), now, secrets.token_hex(16), now)
        storage.makedirs(self.folder)
        for _ in range(50):
            if self._local and _create_exclusive(self._inner, self._encode(me)):
                break
            exists, current = self.read()
            if exists and (reason := stale_reason(current, self.stale_after)) is None:
                raise self._locked(current)
            if exists:
                who = current.describe() if current else "an unknown job"
                print(f"note: taking over {self.path} from {who}: {reason}", file=sys.stderr)
            if self._local:
                if exists:
                    self._remove_stale(current)
                continue
            storage.write_bytes_atomic(self.path, self._encode(me))
            time.sleep(self.settle)
            if (winner := self.read()[1]) is None or winner.token != me.token:
                raise self._locked(winner)
            break
        else:
            raise FolderLockedError(f"{self.folder}: could not take {self.path}: other jobs kept racing for it")
        self.holder, self.lost = me, False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="camtrap-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, unless another job holds it now (then leave it)."""
        if self.holder is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        current = self.read()[1]
        if current is not None and current.token == self.holder.token:
            self._fs.rm_file(self._inner)
        elif current is not None:
            print(f"note: {self.path} is held by {current.describe()} now; left in place", file=sys.stderr)
        self.holder = None

    def _encode(self, holder: Holder) -> bytes:
        return json.dumps(asdict(holder), indent=1).encode()

    def _locked(self, holder: Holder | None) -> FolderLockedError:
        if holder is None:
            return FolderLockedError(f"{self.folder} is in use: another job took {self.path} first")
        if holder.host == socket.gethostname():
            hint = f"stop that job (kill {holder.pid}) or choose another folder"
        else:
            hint = (f"if that job is gone, delete {self.path} or wait: it is taken over once its heartbeat "
                    f"({time.time() - holder.heartbeat:.0f}s ago) is {self.stale_after:.0f}s old")
        return FolderLockedError(f"{self.folder} is in use: held by {holder.describe()}; {hint}")

    def _remove_stale(self, stale: Holder | None) -> None:
        """Delete the stale local lock ``stale``, one job at a time, so none deletes a lock just retaken.

        Under the guard (itself an O_EXCL file) the lock is re-read and deleted only if it is still
        ``stale``: while it exists no O_EXCL create can replace it, and no other taker can delete it. A
        guard left by a job killed in those microseconds is cleared once it is ten seconds old.
        """
        guard = f"{self._inner}.takeover"
        if not _create_exclusive(guard, b""):
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(guard) > 10:
                    os.remove(guard)
            time.sleep(0.05)
            return
        try:
            exists, current = self.read()
            if exists and _token(current) == _token(stale):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._inner)
        finally:
            os.remove(guard)

    def _beat(self) -> None:
        """Rewrite the heartbeat every ``stale_after / 4`` seconds while the lock is still ours."""
        assert self.holder is not None
        while not self._stop.wait(self.stale_after / 4):
            try:
                current = self.read()[1]
                if _token(current) != self.holder.token:
                    self.lost = True
                    who = current.describe() if current else "nobody (it was deleted)"
                    print(f"warning: {self.path} is held by {who} now", file=sys.stderr)
                    return
                self.holder.heartbeat, self.holder.ray_address = time.time(), _ray_address()
                storage.write_bytes_atomic(self.path, self._encode(self.holder))
            except Exception as e:  # noqa: BLE001 - a storage hiccup: the next beat retries in time
                print(f"warning: could not refresh {self.path}: {e}", file=sys.stderr)
