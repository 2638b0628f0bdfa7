"""JSON rendering of results as OML does it: DataFrames as records lists, NaN as null, ISO timestamps.

Used by the server (table pages) and by workers (function results), so it imports only pandas/numpy/orjson.
"""

from __future__ import annotations

import pandas as pd

#: pandas' default, which OML's outputs match (floats rounded to 10 decimals).
DOUBLE_PRECISION = 10


def frame_to_json(df: pd.DataFrame) -> bytes:
    """A DataFrame as a JSON records list."""
    df = _binary_to_base64(df)
    return df.to_json(
        orient="records", date_format="iso", double_precision=DOUBLE_PRECISION, default_handler=str
    ).encode()


def _binary_to_base64(df: pd.DataFrame) -> pd.DataFrame:
    import base64

    candidates = [c for c, t in df.dtypes.items() if pd.api.types.is_object_dtype(t)]
    cols = [c for c in candidates if df[c].map(lambda v: isinstance(v, bytes)).any()]
    if not cols:
        return df
    df = df.copy()
    for c in cols:
        df[c] = df[c].map(lambda v: base64.b64encode(v).decode() if isinstance(v, bytes) else v)
    return df
