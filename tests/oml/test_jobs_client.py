"""The Python client's async option: a job handle with status(), result(), cancel() and wait()."""

from __future__ import annotations

import pytest

import oml

SLOW = "def slow(t=0.1):\n    import time\n    time.sleep(t)\n    return {'slept': t}\n"


@pytest.fixture
def connected(oml_user):
    url, user, password = oml_user
    oml.connect(url=url, username=user, password=password)
    oml.script.create("slow", func=SLOW, overwrite=True)


def test_async_do_eval_returns_a_job_whose_wait_gives_the_value(connected):
    job = oml.do_eval("slow", t=0.2, oml_async_flag=True)
    assert isinstance(job, oml.Job)
    assert job.status()["state"] in ("QUEUED", "RUNNING", "DONE")
    assert job.wait(timeout=60, interval=0.05, progress=False) == {"slept": 0.2}
    assert job.status()["state"] == "DONE" and job.result() == {"slept": 0.2}


def test_async_index_apply_shapes_its_result_and_shows_progress(connected, capsys):
    job = oml.index_apply(
        6, "def sq(i):\n    import time\n    time.sleep(0.1)\n    return i * i\n", oml_async_flag=True
    )
    assert job.wait(timeout=60, interval=0.05, progress=True) == [1, 4, 9, 16, 25, 36]
    assert f"job {job.id[:8]}" in capsys.readouterr().err


def test_result_before_done_raises_and_cancel_removes_the_job(connected):
    job = oml.do_eval("slow", t=600, oml_async_flag=True)
    with pytest.raises(oml.NotFoundError, match="not ready"):
        job.result()
    job.cancel()
    with pytest.raises(oml.NotFoundError):
        job.status()


def test_a_failed_job_raises_the_servers_error(connected):
    job = oml.do_eval("def bad():\n    raise KeyError('gone')\n", oml_async_flag=True)
    with pytest.raises(oml.InvalidRequestError, match="KeyError"):
        job.wait(timeout=60, interval=0.05, progress=False)


def test_wait_can_time_out(connected):
    job = oml.do_eval("slow", t=600, oml_async_flag=True, oml_timeout=1800)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.3, interval=0.05, progress=False)
    job.cancel()
