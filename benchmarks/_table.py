"""Tables printed by the benchmark scripts: Markdown, or aligned plain text.

``align`` gives each column's alignment, ``"l"`` (text) or ``"r"`` (numbers),
e.g. ``"llr"`` for two text columns and one number.

Example::

    print(markdown_header(["rule", "ms"], "lr"))   # | rule | ms |  then  |---|---:|
    print(markdown_row(["adam", "1.25"]))          # | adam | 1.25 |
"""

from collections.abc import Sequence


def _check(columns: Sequence[str], align: str) -> None:
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(
            f"align {align!r} must hold one 'l' or 'r' per column ({len(columns)})"
        )


def markdown_header(columns: Sequence[str], align: str) -> str:
    """The header line and the alignment line of a Markdown table."""
    _check(columns, align)
    rule = "".join("---|" if a == "l" else "---:|" for a in align)
    return markdown_row(columns) + "\n|" + rule


def markdown_row(cells: Sequence[str]) -> str:
    """One line of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: str,
    *,
    markdown: bool = True,
) -> None:
    """Prints ``rows`` under ``columns``, as Markdown or as aligned plain text."""
    _check(columns, align)
    if markdown:
        print(markdown_header(columns, align))
        for row in rows:
            print(markdown_row(row))
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            x.ljust(w) if a == "l" else x.rjust(w)
            for x, w, a in zip(cells, widths, align, strict=True)
        )

    print(line(columns))
    for row in rows:
        print(line(row))
