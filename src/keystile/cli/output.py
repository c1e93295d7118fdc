"""What the admin commands print: the HTTP API's JSON body (``--json``), or
aligned tables for a human, and failures as one line on stderr.

Tables are laid out by Rich (it measures wide characters correctly) and are
never wrapped or truncated: an id or a secret cut in half is worse than a
line the terminal wraps.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keystile.api.schemas import dump
from keystile.errors import KeystileError, ValidationFailed

EMPTY = "-"


# A description or a metadata value may hold line breaks and tabs; a table
# row must stay one line.
_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def cell(value: Any) -> str:
    """One JSON value as table text: lists space-joined, objects as
    ``key=value`` pairs, null and empty as ``-``, line breaks escaped."""
    if value is None or value == [] or value == {}:
        return EMPTY
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return " ".join(f"{name}={cell(item)}" for name, item in value.items())
    return str(value).translate(_ESCAPES)


def _text(value: Any) -> Text:
    # Text, not str: Rich would read "[red]" or ":smile:" in a key's name as markup.
    return Text(cell(value))


def _render(table: Table) -> str:
    # Measure first, then lay out at the table's natural width; trailing
    # padding is stripped so the output diffs and greps cleanly.
    width = Console(file=io.StringIO(), width=100_000).measure(table).maximum
    console = Console(file=io.StringIO(), width=max(width, 1), color_system=None)
    console.print(table)
    assert isinstance(console.file, io.StringIO)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows under upper-case headers (the JSON field names), two spaces apart."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="none")
    for column in columns:
        table.add_column(column.upper(), no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(_text(row.get(column)) for column in columns))
    return _render(table)


def fields_table(item: dict[str, Any]) -> str:
    """One object, a field per line: every field, in the API's order."""
    table = Table(box=None, pad_edge=False, show_edge=False, show_header=False)
    table.add_column("field", no_wrap=True, overflow="ignore")
    table.add_column("value", no_wrap=True, overflow="ignore")
    for name, value in item.items():
        table.add_row(name, _text(value))
    return _render(table)


def emit(body: BaseModel, as_json: bool, columns: Sequence[str]) -> None:
    """Print ``body`` (an API envelope): its exact JSON, or a table, a row per
    item of a list (``columns`` of it) or a line per field of one object."""
    if as_json:
        sys.stdout.buffer.write(dump(body) + b"\n")
        sys.stdout.flush()
        return
    data = body.model_dump(mode="json")["data"]
    typer.echo(rows_table(data, columns) if isinstance(data, list) else fields_table(data))


def note(text: str) -> None:
    """A remark for the human at the terminal (stderr; never in ``--json``'s way)."""
    typer.echo(text, err=True)


def error_line(exc: KeystileError) -> str:
    """The API's ``message``, then each of its ``details`` as ``field: message``:
    the same words the HTTP API answers for the same mistake."""
    if isinstance(exc, ValidationFailed) and exc.details:
        problems = "; ".join(f"{d.field}: {d.message}" for d in exc.details)
        return f"{exc.message} ({problems})"
    return exc.message
