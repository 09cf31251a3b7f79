"""Fixed-width tables of the benchmarks' reports.

A :class:`Table` lays its header and its rows out with one format string, so each row
lines up under the header; :func:`num` and :func:`pair` format the figures of a cell
(``-`` for a missing one).
"""

from __future__ import annotations


def num(value: float | None, digits: int = 1, width: int = 0, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (``-`` if None), right-aligned to ``width``."""
    text = "-" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"
    return text.rjust(width) if width else text


def pair(a: float | None, b: float | None, digits: int = 1) -> str:
    """``a/b``, e.g. a p50 and a p99."""
    return num(a, digits) + "/" + num(b, digits)


class Table:
    """A fixed-width table. ``layout`` is a format string with one field per column,
    e.g. ``"{:<13}{:>3} |{:>6}"``: each column's alignment and width, and what stands
    between the columns; ``titles`` are the columns' titles, comma-separated. The
    header and the rows are laid out alike, so the rows line up under the header."""

    def __init__(self, layout: str, titles: str) -> None:
        self.layout = layout
        self.titles = titles.split(",")
        if layout.count("{") != len(self.titles):
            raise ValueError(f"{len(self.titles)} titles for the layout {layout!r}")

    def header(self) -> str:
        return self.layout.format(*self.titles)

    def head(self, rule_extra: int = 0) -> list[str]:
        """The header and a rule of dashes under it (``rule_extra`` longer)."""
        header = self.header()
        return [header, "-" * (len(header) + rule_extra)]

    def row(self, *cells: object) -> str:
        if len(cells) != len(self.titles):
            raise ValueError(f"{len(cells)} cells for {len(self.titles)} columns")
        return self.layout.format(*(str(cell) for cell in cells))
