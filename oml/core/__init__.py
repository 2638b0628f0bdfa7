"""`oml.core`: the transparency layer's classes, at Oracle OML4Py's module paths (`oml.core.frame.DataFrame`)."""

from oml.core import frame, series

__all__ = ["frame", "series"]
