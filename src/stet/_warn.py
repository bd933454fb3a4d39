"""Warnings that name the user's line: the first frame outside stet's own files."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn"]

_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` with the ``stacklevel`` of the innermost caller outside stet (a
    fixed ``stacklevel`` names stet's own line whenever the path to it changes)."""
    frame = sys._getframe(0)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category, stacklevel=level)
