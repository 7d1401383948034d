"""What a command shows: Rich on a terminal, plain lines in logs, JSON for CI."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from sqlsentinel.masking import mask

if TYPE_CHECKING:
    from rich.console import Console

# Plain words for logs, marks and colours for a terminal; None means a warning.
PLAIN_MARKS = {True: "PASS", False: "FAIL", None: "WARN"}
RICH_MARKS = {True: ("✓", "green"), False: ("✗", "red"), None: ("!", "yellow")}


class Reporter:
    """Human output on one stream; with --json, one JSON document on stdout."""

    def __init__(
        self, command: str, json_mode: bool, stream: TextIO | None = None
    ) -> None:
        self.command = command
        self.json_mode = json_mode
        # With --json, stdout carries only the document; people read stderr.
        self.stream = stream or (sys.stderr if json_mode else sys.stdout)
        self.rich = _is_terminal(self.stream)
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The Rich console on the human stream (only used on a terminal)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    def line(self, text: str, style: str = "") -> None:
        """Print one line of human output, secrets masked."""
        text = mask(text)
        if self.rich:
            from rich.text import Text

            self.console.print(Text(text, style=style))
        else:
            print(text, file=self.stream, flush=True)

    def check(self, name: str, ok: bool | None, detail: str = "") -> None:
        """Print one checked step: PASS, FAIL, or WARN when ``ok`` is None."""
        suffix = f"  {detail}" if detail else ""
        if self.rich:
            mark, style = RICH_MARKS[ok]
            self.line(f"{mark} {name}{suffix}", style)
        else:
            self.line(f"{PLAIN_MARKS[ok]}  {name}{suffix}")

    def table(
        self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> None:
        """Print a table: a Rich table on a terminal, aligned columns otherwise."""
        if self.rich:
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for header in headers:
                table.add_column(header, overflow="fold")
            for row in rows:
                table.add_row(*(mask(cell) for cell in row))
            self.console.print(table)
            return
        self.line(title)
        widths = [
            max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))
        ]
        for row in [headers, *rows]:
            cells = [
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ]
            self.line("  " + "  ".join(cells).rstrip())

    def emit(self, document: dict[str, Any]) -> None:
        """Write the JSON document to stdout when --json was given."""
        if self.json_mode:
            text = mask(json.dumps({"command": self.command, **document}, default=str))
            sys.stdout.write(text + "\n")
            sys.stdout.flush()


def _is_terminal(stream: TextIO) -> bool:
    """Say whether Rich should draw: a terminal that is not dumb."""
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def error_line(message: str) -> None:
    """Print an error sentence on stderr, whatever the human stream is."""
    text = mask(message)
    if _is_terminal(sys.stderr):
        from rich.console import Console
        from rich.text import Text

        Console(file=sys.stderr).print(Text.assemble(("error: ", "bold red"), text))
    else:
        print(f"error: {text}", file=sys.stderr, flush=True)
