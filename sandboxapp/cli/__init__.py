"""The command line: the only part of sandboxapp that prints for users (through output.py).
One module per group of commands: run.py (`run`), images.py (`image`, `shell`), manage.py
(the rest)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sandboxapp import __version__
from sandboxapp.cli.images import add_image, add_shell
from sandboxapp.cli.manage import (
    add_cleanup,
    add_desktop,
    add_doctor,
    add_list,
    add_ps,
    add_setup,
    add_stop,
)
from sandboxapp.cli.run import add_run
from sandboxapp.errors import SandboxError
from sandboxapp.output import report
from sandboxapp.paths import Locations

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


COMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "list": add_list, "run": add_run, "ps": add_ps, "stop": add_stop,
    "doctor": add_doctor, "shell": add_shell, "cleanup": add_cleanup, "setup": add_setup,
    "desktop": add_desktop, "image": add_image,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command` (one of COMMANDS), only that command's part:
    every launch pays for building the parser, and `run` needs none of the others."""
    parser = argparse.ArgumentParser(
        prog="sandboxapp",
        description="Run desktop programs in throw-away systemd-nspawn containers.",
    )
    parser.add_argument("--version", action="version", version=f"sandboxapp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in COMMANDS.items():
        if command is None or name == command:
            add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(words)
    func: Callable[[argparse.Namespace, Locations], int] = args.func
    try:
        return int(func(args, Locations.from_environment()))
    except SandboxError as error:
        report(error, sys.stderr)
        if args.command == "run" and not sys.stderr.isatty():
            # Started from a menu: nobody reads stderr, so say it on the desktop too.
            from sandboxapp.host.notify import notify

            body = error.message + (f"\n{error.hint}" if error.hint else "")
            notify(os.environ, f"sandboxapp: {getattr(args, 'profile', '')} did not start",
                   body)
        return int(error.status)
    except KeyboardInterrupt:
        sys.stderr.write("sandboxapp: interrupted\n")
        return 130


def entry() -> None:
    """The `sandboxapp` command."""
    from sandboxapp.errors import finish

    finish(main())

