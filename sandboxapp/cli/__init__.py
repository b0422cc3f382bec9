"""The command line: the only part of sandboxapp that prints for users (through output.py).
One module per group of commands: run.py (`run`), images.py (`image`, `shell`), manage.py
(the rest), each loaded only for its own commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sandboxapp import __version__
from sandboxapp.errors import SandboxError
from sandboxapp.output import report
from sandboxapp.paths import Locations

if TYPE_CHECKING:
    from sandboxapp.launch.helperclient import PendingHelper

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


# Each command: the module of cli/ that adds it to the parser, and the function that does.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("manage", "add_list"), "run": ("run", "add_run"), "ps": ("manage", "add_ps"),
    "stop": ("manage", "add_stop"), "reset": ("manage", "add_reset"),
    "doctor": ("manage", "add_doctor"),
    "shell": ("images", "add_shell"), "cleanup": ("manage", "add_cleanup"),
    "setup": ("manage", "add_setup"), "desktop": ("manage", "add_desktop"),
    "image": ("images", "add_image"),
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
    for name, (module, function) in COMMANDS.items():
        if command is None or name == command:
            add: Callable[[Subparsers], None] = getattr(
                importlib.import_module(f"sandboxapp.cli.{module}"), function)
            add(commands)
    return parser


def starts_a_launch(words: Sequence[str]) -> bool:
    """The words are a `run` that will launch: not a dry run, nor help (nor anything in doubt:
    `run` then starts the helper itself, later)."""
    if list(words[:1]) != ["run"]:
        return False
    options = list(words[1:])
    options = options[:options.index("--")] if "--" in options else options
    return not {"--dry-run", "-h", "--help"} & set(options)


def early_helper(words: Sequence[str]) -> PendingHelper | None:
    """For a desktop user's launch, the privileged helper, started before anything else is
    loaded: sudo and the helper's interpreter then start while this one loads and reads the
    profile."""
    if os.geteuid() == 0 or not starts_a_launch(words):
        return None
    from sandboxapp.launch.helperclient import PendingHelper

    return PendingHelper(os.environ)


def main(argv: Sequence[str] | None = None, helper: PendingHelper | None = None) -> int:
    """helper: early_helper's, for `run` to use (the caller abandons it if `run` does not)."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(words)
    args.helper = helper
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

    words = sys.argv[1:]
    try:
        helper = early_helper(words)
    except SandboxError:
        helper = None  # not set up for this user: `run` tries again, and says why in its way
    try:
        status = main(words, helper)
    finally:
        if helper is not None:
            helper.abandon()
    finish(status)

