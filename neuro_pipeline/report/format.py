"""Number and table formatting shared by the report's Markdown and HTML (the page and the drift section).

The HTML tables themselves are macros in ``templates/macros.html.j2``; :func:`is_numeric_cell`
decides there which cells are right-aligned numbers.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

#: A cell that reads as a number (also a percentage, "mean ± std", or the dash of a missing value).
_NUMERIC = re.compile(r"^[-+]?[\d.,]+%?( ± [\d.]+)?$|^–$")


class Table(NamedTuple):
    """A table as the templates get it (``table`` in ``templates/macros.html.j2``): the header
    cells and the rows of cells. A report section whose table has no rows is left out.

    >>> header, rows = Table(["method", "k"], [["probeless", 27]])
    """

    header: list[str]
    rows: list[Any]


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal; None (not computed) as a dash.

    >>> pct(0.9423), pct(None)
    ('94.2%', '–')
    """
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; None (not computed) as a dash.

    >>> num(0.91), num(1 / 3, 2), num(None)
    ('0.910', '0.33', '–')
    """
    return "–" if x is None else f"{x:.{digits}f}"


def thousands(n: int) -> str:
    """A count with thousands separators (the word counts of the report's header).

    >>> thousands(1234567)
    '1,234,567'
    """
    return f"{n:,}"


def is_numeric_cell(value: object) -> bool:
    """Whether a table cell is a number, which HTML tables right-align; names and word lists
    are left-aligned.

    >>> [is_numeric_cell(v) for v in (27, "52.0% ± 5.0", "–", "-5.0", "L2:266", "cat, dog")]
    [True, True, True, True, False, False]
    """
    return bool(_NUMERIC.match(str(value)))


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; cells are formatted with ``str``.

    >>> print(markdown_table(["method", "k"], [["probeless", 27]]))
    | method | k |
    |---|---|
    | probeless | 27 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
