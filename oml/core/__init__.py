"""`oml.core`: the modules Oracle's `oml` keeps its proxy classes and session helpers in, under the same names
(dbt-oracle's Python-model scripts call `oml.core.methods._get_conn()` and `oml.core.frame.DataFrame`)."""

from oml.core import methods

__all__ = ["methods"]
