"""A griffe extension for the API reference: stet's docstrings use a little reST.

* ``:func:`stet.configure``` and the like (``:class:``, ``:meth:``, ``:mod:``, ``:attr:``,
  ``:exc:``, ``:data:``) become inline code (a leading ``~`` is dropped);
* ``paragraph::`` introducing an indented block becomes ``paragraph:``;
* reST's double backquotes are already valid Markdown inline code.

It changes nothing in the source: only the text the reference renders.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|exc|data|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"::\n")


def _convert(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _LITERAL.sub(":\n", text)


class RstRoles(griffe.Extension):
    """Rewrites reST roles in every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _convert(obj.docstring.value)
