"""The hooks Jupyter and IPython call to show a value, written once for the models, the errors
and the streams. Pure: each hook loads `chatlib.notebook`, where the rules are, on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RichDisplay"]


class RichDisplay:
    """`_repr_markdown_`, `_repr_html_` and `_repr_pretty_`, delegating to `chatlib.notebook`
    (Jupyter calls them when a value ends a cell, or is passed to `display`).

    A subclass that defines its own `__repr__` names the pretty hook in its body too
    (`_repr_pretty_ = RichDisplay._repr_pretty_`): IPython's printer walks the MRO and takes
    the first class holding either, so an inherited `_repr_pretty_` would lose to that repr.
    """

    __slots__ = ()

    def _repr_markdown_(self) -> str | None:
        from chatlib.notebook import markdown_view

        return markdown_view(self)

    def _repr_html_(self) -> str | None:
        from chatlib.notebook import html_view

        return html_view(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from chatlib.notebook import pretty

        pretty(self, p, cycle)
