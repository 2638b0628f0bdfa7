"""`oml.core`: the transparency layer's classes and the session helpers, at Oracle OML4Py's module paths
(`oml.core.frame.DataFrame`; dbt-oracle's Python-model scripts call `oml.core.methods._get_conn()`)."""

from oml.core import frame, methods, series

__all__ = ["frame", "methods", "series"]
