"""A deployment in real worker processes: its model is loaded once per worker and stays warm; a model that
crashes its worker costs that request, not the endpoint."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np

from tests.conftest import Api
from tests.server.support import SQLITE_ONLY
from tests.server.test_omlmod import DEPLOY, assert_error, deploy, score, store

pytestmark = SQLITE_ONLY


class CountsItsLoads:
    """Predicts how many times this worker process has unpickled a CountsItsLoads."""

    n_features_in_ = 1

    def __init__(self) -> None:
        self.state = "unpickled"  # a non-empty state: pickle calls __setstate__ only then

    def __setstate__(self, state: dict) -> None:
        import builtins

        builtins._pyqd_test_loads = getattr(builtins, "_pyqd_test_loads", 0) + 1  # type: ignore[attr-defined]
        self.__dict__.update(state)

    def predict(self, x: np.ndarray) -> np.ndarray:
        import builtins

        return np.full(len(x), float(builtins._pyqd_test_loads))  # type: ignore[attr-defined]


class CrashesOnNegatives:
    """Segfaults when asked about a negative number, else doubles it."""

    n_features_in_ = 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        if (np.asarray(x) < 0).any():
            import ctypes

            ctypes.string_at(0)  # SIGSEGV
        return np.asarray(x, dtype=float)[:, 0] * 2


def _pickled(obj: object) -> bytes:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        return cloudpickle.dumps(obj)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_deployment_stays_warm(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, _pickled(CountsItsLoads()), "counter", "PYTHON")
    deploy(api, h, created["modelId"], "counter")
    seen = [score(api, h, "counter", {"inputRecords": [{"x0": 1}]})[0]["regression"] for _ in range(20)]
    assert seen == [1.0] * 20  # every worker that served loaded the model once


def test_a_crashing_model_costs_one_request(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, _pickled(CrashesOnNegatives()), "crashy", "PYTHON")
    deploy(api, h, created["modelId"], "crashy")
    assert score(api, h, "crashy", {"inputRecords": [{"x0": 2}]}) == [{"regression": 4.0}]
    r = api.client.post(f"{DEPLOY}/crashy/score", headers=h, json={"inputRecords": [{"x0": -1}]})
    assert_error(r, 500, "stopped while scoring")
    assert "SIGSEGV" in r.json()["message"] or "signal" in r.json()["message"]
    for _ in range(3):  # the endpoint answers again: a fresh worker loads the model
        assert score(api, h, "crashy", {"inputRecords": [{"x0": 3}, {"x0": "4.5"}]}) == [
            {"regression": 6.0},
            {"regression": 9.0},
        ]
