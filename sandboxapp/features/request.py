"""What a desktop user's launcher asks the privileged helper: one schema for both sides.

The launcher writes a request as command-line words (client.py sends them as one JSON line, or
they are the helper's arguments); the helper parses them back here and trusts none of it beyond
its form: every path is absolute and without '..', and the rest is checked against the profile
it reads again (privileged.py).
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class Action(enum.StrEnum):
    LAUNCH = "launch"  # a new sandbox
    JOIN = "join"  # the command inside the user's running sandbox
    BUILD = "build"  # a trusted profile's image, for a user's first launch
    UPDATE = "update"  # the same, for an auto-update


def _absolute(text: str) -> Path:
    path = Path(text)
    if not path.is_absolute() or ".." in path.parts:
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path without '..'")
    return path


@dataclass(frozen=True)
class HelperRequest:
    action: Action
    profile: str
    profile_file: Path
    data_home: Path
    display: int | None = None
    # The directories the user's launcher made for the sandbox's X authorization and sound.
    x11_dir: Path | None = None
    sound_dir: Path | None = None
    program: str | None = None  # `run --command PROG`
    args: tuple[str, ...] = ()

    def words(self) -> list[str]:
        words = [self.action.value, "--profile-file", str(self.profile_file),
                 "--data-home", str(self.data_home)]
        if self.display is not None:
            words += ["--display", str(self.display)]
        if self.x11_dir is not None:
            words += ["--x11-dir", str(self.x11_dir)]
        if self.sound_dir is not None:
            words += ["--sound-dir", str(self.sound_dir)]
        if self.program is not None:
            words += ["--command", self.program]
        return [*words, self.profile, "--", *self.args]

    @classmethod
    def parse(cls, words: Sequence[str]) -> HelperRequest:
        """The request the words say; a malformed one exits with argparse's usage error."""
        args = _parser().parse_args(list(words))
        extra = list(args.args)
        if extra and extra[0] == "--":
            extra = extra[1:]
        return cls(Action(args.action), args.profile, args.profile_file, args.data_home,
                   args.display, args.x11_dir, args.sound_dir, args.program, tuple(extra))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandboxapp-privileged")
    actions = parser.add_subparsers(dest="action", required=True)
    for action in Action:
        sub = actions.add_parser(action.value)
        sub.add_argument("--profile-file", type=_absolute, required=True)
        sub.add_argument("--data-home", type=_absolute, required=True)
        sub.add_argument("--display", type=int)
        sub.add_argument("--x11-dir", type=_absolute)
        sub.add_argument("--sound-dir", type=_absolute)
        sub.add_argument("--command", dest="program")
        sub.add_argument("profile")
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser
