"""The run-folder lock: one job per folder, a dead holder's lock taken over, never someone else's removed."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

from camtrap.data import storage
from camtrap.data.lock import LOCK_NAME, FolderLockedError, Holder, RunLock
from camtrap.errors import InputError

HOLD = """
import sys, time
from camtrap.data.lock import RunLock
with RunLock(sys.argv[1], job="holder.py"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder, host: str, heartbeat_age: float, token: str = "theirs") -> dict:
    """Write a lock as another job (on ``host``) would have, its heartbeat ``heartbeat_age`` seconds old."""
    now = time.time()
    fields = {"host": host, "pid": 4242, "started": now - 3600, "job": "train.py", "ray_address": None,
              "acquired_at": now - 3600, "token": token, "heartbeat": now - heartbeat_age}
    storage.write_bytes_atomic(storage.join(str(folder), LOCK_NAME), json.dumps(fields).encode())
    return fields


def _lock_file(folder) -> Holder | None:
    path = storage.join(str(folder), LOCK_NAME)
    return Holder.parse(storage.read_bytes(path)) if storage.exists(path) else None


@pytest.fixture(params=["local", "memory"])
def folder(request, tmp_path):
    """A run folder on disk, and one on an fsspec object store (``memory://``: no O_EXCL, no rename)."""
    if request.param == "local":
        return str(tmp_path / "run")
    return f"memory://bucket/{uuid.uuid4().hex}/run"


def test_acquire_writes_who_holds_and_release_removes(folder):
    with RunLock(folder, job="train.py", settle=0.05) as lock:
        held = _lock_file(folder)
        assert held is not None and held.token == lock.holder.token
        assert (held.pid, held.host, held.job) == (os.getpid(), socket.gethostname(), "train.py")
        assert held.started == psutil.Process().create_time() and held.heartbeat >= held.acquired_at
    assert _lock_file(folder) is None
    with RunLock(folder, settle=0.05):  # free again
        pass


def test_second_acquire_in_this_process_is_refused(folder):
    with RunLock(folder, job="train.py", settle=0.05), \
            pytest.raises(FolderLockedError, match=f"held by train.py pid {os.getpid()} on host") as e:
        RunLock(folder, settle=0.05).acquire()
    assert isinstance(e.value, InputError)  # jobs print it as a one-line error and exit 2


def test_live_holder_in_another_process_is_refused_then_taken_over_once_killed(tmp_path, capfd):
    folder = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "held", "the holder never took the lock"
        with pytest.raises(FolderLockedError, match=f"held by holder.py pid {proc.pid} on host .*kill {proc.pid}"):
            RunLock(folder).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with RunLock(folder) as lock:
        assert _lock_file(folder).token == lock.holder.token
    err = capfd.readouterr().err
    assert f"taking over {storage.join(folder, LOCK_NAME)} from holder.py pid {proc.pid}" in err
    assert f"pid {proc.pid} has exited" in err


def test_reused_pid_is_stale(tmp_path, capsys):
    folder = tmp_path / "run"
    fields = _holder(folder, socket.gethostname(), heartbeat_age=0)
    fields.update(pid=os.getpid(), started=psutil.Process().create_time() - 1000)  # our pid, another start
    storage.write_bytes_atomic(str(folder / LOCK_NAME), json.dumps(fields).encode())
    with RunLock(str(folder)):
        pass
    assert f"pid {os.getpid()} now belongs to another process" in capsys.readouterr().err


def test_other_hosts_lock_is_refused_while_its_heartbeat_is_fresh_and_taken_over_when_old(folder, capsys):
    _holder(folder, "elsewhere.example", heartbeat_age=5)
    with pytest.raises(FolderLockedError, match="pid 4242 on host elsewhere.example .*if that job is gone"):
        RunLock(folder, stale_after=60, settle=0.05).acquire()
    _holder(folder, "elsewhere.example", heartbeat_age=61)
    with RunLock(folder, stale_after=60, settle=0.05) as lock:
        assert _lock_file(folder).token == lock.holder.token
    assert "its last heartbeat is 61s old" in capsys.readouterr().err


def test_stale_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CAMTRAP_LOCK_STALE_SECONDS", "7.5")
    assert RunLock("somewhere").stale_after == 7.5
    assert RunLock("somewhere", stale_after=3).stale_after == 3
    monkeypatch.delenv("CAMTRAP_LOCK_STALE_SECONDS")
    assert RunLock("somewhere").stale_after == 120


def test_release_leaves_a_lock_that_another_job_took_over(folder, capsys):
    lock = RunLock(folder, stale_after=600, settle=0.05)
    with lock:
        _holder(folder, "elsewhere.example", heartbeat_age=0, token="newcomer")
    assert _lock_file(folder).token == "newcomer"
    assert "held by train.py pid 4242 on host elsewhere.example" in capsys.readouterr().err


def test_heartbeat_is_refreshed_and_a_lost_lock_is_noticed(folder):
    with RunLock(folder, stale_after=0.4, settle=0.05) as lock:
        first = _lock_file(folder).heartbeat
        deadline = time.monotonic() + 5
        while _lock_file(folder).heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _lock_file(folder).heartbeat > first
        _holder(folder, "elsewhere.example", heartbeat_age=0, token="newcomer")
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.lost
    assert _lock_file(folder).token == "newcomer"


def _race(folder: str, n: int) -> tuple[list[RunLock], list[RunLock]]:
    """``n`` threads acquire ``folder`` at once: the locks that won and those refused."""
    barrier, won, refused = threading.Barrier(n), [], []

    def contend() -> None:
        lock = RunLock(folder, stale_after=60, settle=0.2)
        barrier.wait(timeout=10)
        try:
            lock.acquire()
            won.append(lock)
        except FolderLockedError:
            refused.append(lock)

    threads = [threading.Thread(target=contend) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return won, refused


@pytest.mark.parametrize("start", ["free", "stale"])
def test_racing_threads_exactly_one_wins(folder, start):
    """Eight contenders at once, many times: on a free folder (local: the O_EXCL create; object store:
    write, settle, re-read) and on another host's stale lock (local: the takeover guard)."""
    for _ in range(5 if storage.is_uri(folder) else 20):
        if start == "stale":
            _holder(folder, "elsewhere.example", heartbeat_age=1000)
        won, refused = _race(folder, 8)
        assert (len(won), len(refused)) == (1, 7)
        assert _lock_file(folder).token == won[0].holder.token
        won[0].release()
        assert _lock_file(folder) is None


@pytest.mark.parametrize("job", ["train", "tune"])
def test_a_job_on_a_held_folder_exits_2_naming_the_holder_before_starting_ray(tmp_path, capsys, job):
    """train.py and tune.py take the lock first: the second job on a folder is refused in a second."""
    from jobs import load_job

    folder = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "held"
        data = ["--metadata", "m.csv", "--labels", "l.csv", "--images-dir", "img", "--out", folder]
        argv = (["--recipe", "cpu_tiny", *data] if job == "train"
                else ["--space", "cpu_smoke", "--recipe", "cpu_tiny", *data])
        start = time.monotonic()
        assert load_job(job).main(argv) == 2
        assert time.monotonic() - start < 30
        assert f"held by holder.py pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait(timeout=30)
