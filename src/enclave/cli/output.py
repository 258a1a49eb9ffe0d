"""Printing lists and objects for a person (tables that fit the terminal, key/value views)
or for a program (``-o json|yaml|csv|ids``), as kubectl and gh do.

A list is a table whose columns are chosen to fit the console's width: ids, names, states and
labels first, then the others in the order the command gave; a column is shown whole or not at
all (an id is never cut), except free text (reasons, descriptions), which wraps. The footer
names what was left out; ``--wide`` (``-o wide``) shows everything. A single object is a
vertical key/value view, so nothing hides at 80 columns.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from enclave.cli.humanize import human, is_number
from enclave.errors import InvalidInput

FORMATS = ("table", "wide", "json", "yaml", "csv", "ids")
UNLIMITED_WIDTH = 10_000  # a table printed whole (--wide, or piped) may be this wide
COLUMN_GAP = 2  # spaces between two columns
FREE_TEXT_MIN_WIDTH = 16  # a free-text column wraps, but not narrower than this
FIRST = {"id": 0, "name": 0, "state": 1, "label": 1}  # kept before the other columns
FREE_TEXT = {"reason", "description", "outcome", "metrics", "settings", "quotas", "message", "detail"}


def is_id(column: str) -> bool:
    return column == "id" or column.endswith("_id") or column in {"sha256", "model", "job"}


def check_format(output: str | None, as_json: bool = False) -> str:
    """The format asked for (``--json`` is ``-o json``); one readable line for a bad one."""
    if as_json:
        return "json"
    fmt = (output or "table").lower()
    if fmt not in FORMATS:
        raise InvalidInput(f"-o/--output takes {', '.join(FORMATS)}; not {output!r}")
    return fmt


def fit(columns: Sequence[str], widths: Sequence[int], width: int) -> list[str]:
    """The columns to show in ``width`` cells: by priority, each whole or left out."""
    order = sorted(range(len(columns)), key=lambda i: (FIRST.get(columns[i], 2), i))
    chosen: set[int] = set()
    used = 0
    for i in order:
        need = min(widths[i], FREE_TEXT_MIN_WIDTH) if columns[i] in FREE_TEXT else widths[i]
        need += COLUMN_GAP if chosen else 0
        if not chosen or used + need <= width:
            chosen.add(i)
            used += need
    return [c for i, c in enumerate(columns) if i in chosen]


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None, width: int | None
) -> tuple[Table, list[str]]:
    """A table of ``rows`` fitting ``width`` (None: all columns); also the columns left out."""
    cells = [[human(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([cell_len(c), *(cell_len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    shown = list(columns) if width is None else fit(columns, widths, width)
    out = Table(
        title=title, title_justify="left", box=None, pad_edge=False, padding=(0, 1), header_style="bold"
    )
    for col in shown:
        numeric = any(is_number(r.get(col)) for r in rows) and all(
            is_number(r.get(col)) or r.get(col) is None for r in rows
        )
        free = col in FREE_TEXT
        out.add_column(
            col,
            justify="right" if numeric else "left",
            # chosen to fit, nothing wraps; only free text, or a first column wider than the
            # terminal, folds onto more lines (never cut, never an ellipsis)
            no_wrap=not free and (width is None or widths[columns.index(col)] <= width),
            overflow="fold",
            min_width=min(widths[columns.index(col)], FREE_TEXT_MIN_WIDTH) if free else None,
        )
    index = [columns.index(c) for c in shown]
    for r in cells:
        out.add_row(*(Text(r[i]) for i in index))  # Text: a name may hold [brackets]
    return out, [c for c in columns if c not in shown]


def key_values(obj: dict[str, Any], fields: Sequence[str]) -> Table:
    """One object as ``field  value`` lines; long values wrap under their value column."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for field in fields:
        grid.add_row(field, Text(human(field, obj.get(field))))
    return grid


def table_width(console: Console) -> int | None:
    """The width to fit: the terminal's, or $COLUMNS; None (no limit) when piped without it."""
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console.width
    return None


def print_rows(
    console: Console,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    title: str | None,
    wide: bool,
) -> None:
    width = None if wide else table_width(console)
    rendered, hidden = table(rows, columns, title, width)
    # Unlimited (--wide, or piped without $COLUMNS): a console as wide as the table, since
    # Console.print never goes past its console's width; the rows are not padded beyond it.
    target = console if width is not None else Console(file=console.file, width=UNLIMITED_WIDTH)
    target.print(rendered, crop=False)
    footer = f"{len(rows)} item(s)"
    if hidden:
        footer += f"; hidden at {width} columns: {', '.join(hidden)} (--wide shows all)"
    console.print(Text(footer, style="dim"))


def machine(fmt: str, value: Any, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """``value`` (the API's objects) as json or yaml; ``rows`` as csv or ids."""
    if fmt == "json":
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    elif fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_cell(row.get(c)) for c in columns] for row in rows)
    elif fmt == "ids":
        for row in rows:
            sys.stdout.write(f"{row.get('id', row.get('name'))}\n")
    sys.stdout.flush()


def _csv_cell(value: Any) -> str:
    """Exact values for programs: no units, no rounding; lists and objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
