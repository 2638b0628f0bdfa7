"""Make the small ONNX model the Postman collection stores and scores, byte for byte the same on every run.

    .venv/bin/python postman/make_models.py     (needs the dev extras: scikit-learn, skl2onnx, onnx)

house_price: a linear regression fitted exactly to PRICE = 2 * AREA + 3 * ROOMS + 1, so a score is known in
advance (AREA 10, ROOMS 3 -> 30). One input per column, each a float tensor of shape [batch, 1], so the columns
of an OML Services `inputRecords` entry map to the model's inputs by name; one output `variable` [batch, 1].
Written twice: `house_price.zip` (Oracle's form: `house_price.onnx` + `metadata.json`) and a bare
`house_price.onnx`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

HERE = Path(__file__).resolve().parent
NAME = "house_price"
COLUMNS = ["AREA", "ROOMS"]
#: Oracle's metadata.json for an ONNX regression model (regressionOutput names the output to read).
METADATA = {"function": "regression", "regressionOutput": "variable"}
#: A fixed time for the zip entries (the zip format's earliest), so the archive does not change between runs.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def house_price_model() -> bytes:
    """The fitted regression as ONNX bytes (graph name, opset and IR version fixed)."""
    frame = pd.DataFrame([[a, r] for a in range(1, 6) for r in range(1, 4)], columns=COLUMNS, dtype=float)
    target = 2 * frame["AREA"] + 3 * frame["ROOMS"] + 1
    pipeline = Pipeline(
        [("columns", ColumnTransformer([("numbers", "passthrough", COLUMNS)])), ("regression", LinearRegression())]
    )
    pipeline.fit(frame, target)
    model = convert_sklearn(
        pipeline,
        name=NAME,
        initial_types=[(c, FloatTensorType([None, 1])) for c in COLUMNS],
        target_opset=17,
    )
    model.ir_version = 8  # the lowest IR that carries opset 17: older onnxruntime releases load it too
    # skl2onnx lists the opsets in set order, which changes with the hash seed: sort them.
    opsets = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in opsets:
        model.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def zipped(members: dict[str, bytes]) -> bytes:
    """A zip archive of `members` whose bytes depend only on their names and contents."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buf.getvalue()


def check(model: bytes) -> None:
    """Score the two records the collection scores, to fail here rather than in the collection."""
    import onnxruntime as rt

    session = rt.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = {"AREA": np.array([[1.0], [10.0]], np.float32), "ROOMS": np.array([[2.0], [3.0]], np.float32)}
    (predicted,) = session.run(None, feed)
    assert np.allclose(predicted.ravel(), [9.0, 30.0], atol=1e-4), predicted


def main() -> None:
    model = house_price_model()
    check(model)
    metadata = (json.dumps(METADATA, indent=2) + "\n").encode()
    (HERE / f"{NAME}.onnx").write_bytes(model)
    (HERE / f"{NAME}.zip").write_bytes(zipped({f"{NAME}.onnx": model, "metadata.json": metadata}))
    for suffix in ("onnx", "zip"):
        path = HERE / f"{NAME}.{suffix}"
        print(f"{path.relative_to(HERE.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
