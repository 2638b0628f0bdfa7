"""A crashing, runaway or hungry script never takes the server down: a clear error, then the next call works.
These tests break workers on purpose, so they get a small pool of their own."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.conftest import own_pool_api, wait_for


@pytest.fixture
def fault_api(sqlite_settings):
    with own_pool_api(
        sqlite_settings,
        workers=2,
        warm_workers=1,
        worker_memory_mb=1024,
        sync_time_limit_s=5.0,  # a margin for a loaded CI machine; two tests wait it out
        worker_preload="",
        worker_wait_s=10.0,
    ) as api:
        yield api


@pytest.fixture
def user(fault_api):
    headers = fault_api.user("ALICE")
    fault_api.script(headers, "ok", "def ok():\n    return 'fine'\n")
    return headers


def assert_next_call_works(api, headers):
    assert api.run(headers, "do-eval", "ok").json() == {"result": "fine"}


def test_exception_with_traceback(fault_api, user):
    fault_api.script(user, "bad", "def bad():\n    raise ValueError('nope')\n")
    r = fault_api.run(user, "do-eval", "bad")
    assert r.status_code == 400 and "ValueError: nope" in r.json()["errorMessage"]
    assert_next_call_works(fault_api, user)


def test_os_exit_is_a_500_naming_the_exit(fault_api, user):
    fault_api.script(user, "leave", "def leave():\n    import os\n    os._exit(7)\n")
    r = fault_api.run(user, "do-eval", "leave")
    assert r.status_code == 500 and r.json()["errorCode"] == 1050
    assert "exited with code 7" in r.json()["errorMessage"]
    assert_next_call_works(fault_api, user)


def test_segfault_is_a_500_naming_the_signal(fault_api, user):
    fault_api.script(user, "crash", "def crash():\n    import ctypes\n    return ctypes.string_at(0)\n")
    r = fault_api.run(user, "do-eval", "crash")
    assert r.status_code == 500 and "SIGSEGV" in r.json()["errorMessage"]
    assert_next_call_works(fault_api, user)


def test_sigkill_of_a_busy_worker(fault_api, user):
    src = "def busy():\n    import os\n    open('pid', 'w').write(str(os.getpid()))\n    while True:\n        pass\n"
    fault_api.script(user, "busy", src)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", fault_api.run(user, "do-eval", "busy")))
    thread.start()
    busy = wait_for(lambda: next(iter(w for w in fault_api.services.pool._busy), None))
    pid_file = Path(busy.tmp_dir, "pid")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=30)
    r = box["r"]
    assert r.status_code == 500 and "SIGKILL" in r.json()["errorMessage"]
    assert_next_call_works(fault_api, user)


def test_infinite_loop_hits_the_time_limit(fault_api, user):
    fault_api.script(user, "spin", "def spin():\n    while True:\n        pass\n")
    r = fault_api.run(user, "do-eval", "spin")
    assert r.status_code == 400 and r.json()["errorCode"] == 1040
    assert "asyncFlag" in r.json()["errorMessage"]
    assert_next_call_works(fault_api, user)


def test_memory_bomb_is_refused_by_the_memory_limit(sqlite_settings):
    # A time limit far above what filling the allowance takes, so only the memory limit can stop it.
    with own_pool_api(
        sqlite_settings, workers=1, warm_workers=1, worker_memory_mb=512, sync_time_limit_s=120.0, worker_preload=""
    ) as api:
        headers = api.user("ALICE")
        api.script(headers, "ok", "def ok():\n    return 'fine'\n")
        hog = "def hog():\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))\n"
        api.script(headers, "hog", hog)
        r = api.run(headers, "do-eval", "hog")
        body = r.json()
        assert (r.status_code, body["errorCode"]) in ((400, 1030), (500, 1050)), body
        assert "MemoryError" in body["errorMessage"] or "SIGKILL" in body["errorMessage"], body
        assert_next_call_works(api, headers)


def test_child_processes_die_with_their_worker(fault_api, user):
    src = (
        "def fork():\n    import subprocess, sys\n"
        "    p = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)'])\n"
        "    open('child', 'w').write(str(p.pid))\n    while True:\n        pass\n"
    )
    fault_api.script(user, "fork", src)
    seen = {}

    def watch():
        w = wait_for(lambda: next(iter(fault_api.services.pool._busy), None))
        path = Path(w.tmp_dir, "child")
        seen["pid"] = int(wait_for(lambda: path.exists() and path.read_text()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    r = fault_api.run(user, "do-eval", "fork")
    watcher.join(timeout=30)
    assert r.json()["errorCode"] == 1040

    def gone() -> bool:
        try:
            os.kill(seen["pid"], 0)
        except ProcessLookupError:
            return True
        # a zombie waiting for its reaper counts as gone
        return Path(f"/proc/{seen['pid']}/stat").read_text().split()[2] == "Z"

    wait_for(gone)
    assert_next_call_works(fault_api, user)


def test_a_worker_over_its_cpu_allowance_dies_with_sigxcpu_and_is_replaced(sqlite_settings):
    with own_pool_api(
        sqlite_settings, workers=1, warm_workers=1, worker_cpu_seconds=1, sync_time_limit_s=30.0, worker_preload=""
    ) as api:
        headers = api.user("ALICE")
        api.script(headers, "ok", "def ok():\n    return 'fine'\n")
        api.script(headers, "burn", "def burn():\n    while True:\n        pass\n")
        r = api.run(headers, "do-eval", "burn")
        assert r.status_code == 500 and "SIGXCPU" in r.json()["errorMessage"]
        assert_next_call_works(api, headers)
