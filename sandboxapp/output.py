"""What sandboxapp says to users, in one form: the command line and the privileged helper both
write errors, warnings and tables through these."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from sandboxapp.errors import SandboxError


class TextSink(Protocol):
    """Where messages for the user go: stderr, or stderr and a run log together."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def warning_line(text: str) -> str:
    """A warning, as every part of sandboxapp writes one."""
    return f"sandboxapp: warning: {text}\n"


def warn(text: str, stream: TextSink | None = None) -> None:
    target = stream or sys.stderr
    target.write(warning_line(text))
    target.flush()


def report(error: SandboxError, stream: TextSink) -> None:
    stream.write(f"sandboxapp: {error.message}\n")
    if error.detail:
        for line in error.detail.splitlines():
            stream.write(f"    {line}\n")
    if error.hint:
        stream.write(f"hint: {error.hint}\n")
    stream.flush()


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )

