"""The command line: the only part of sandboxapp that prints for users."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from sandboxapp import __version__
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import Locations
from sandboxapp.profile import Profile, find_profile, iter_profile_files, load_profile_file


def _say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


class TerminalProgress:
    """Stage lines with elapsed time; on a terminal the current line keeps ticking."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.current: str | None = None
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ticker: threading.Thread | None = None

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"[{seconds // 60:2d}:{seconds % 60:02d}]"

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{self._elapsed()} {text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"{self._elapsed()} {text}\n")
        self.stream.flush()

    def _tick(self) -> None:
        while not self.done.wait(1.0):
            with self.lock:
                if self.current:
                    self._line(self.current, final=False)

    def stage(self, text: str) -> None:
        with self.lock:
            if self.tty and self.current:
                self._line(self.current, final=True)
            self.current = text
            self._line(text, final=not self.tty)
        if self.tty and self.ticker is None:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def warn(self, text: str) -> None:
        with self.lock:
            if self.tty and self.current:
                self.stream.write("\r\033[K")
            self.stream.write(f"warning: {text}\n")
            if self.tty and self.current:
                self._line(self.current, final=False)
            self.stream.flush()

    def finish(self, text: str) -> None:
        self.done.set()
        with self.lock:
            if self.tty and self.current:
                self._line(self.current, final=True)
            self.current = None
            self._line(text, final=True)


def _resolve_profile(arg: str, locations: Locations) -> Profile:
    # A path (with a slash or ending in .toml) names a profile file directly; anything else is
    # a profile name looked up in the profile directories.
    if "/" in arg or arg.endswith(".toml"):
        return load_profile_file(Path(arg), origin="file")
    return find_profile(arg, locations)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_list(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore

    store = ImageStore(locations.image_dir)
    rows = [["PROFILE", "FROM", "IMAGE", "FILE"]]
    problems = 0
    for entry in iter_profile_files(locations):
        if entry.shadowed_by is not None:
            continue
        try:
            load_profile_file(entry.path, entry.origin)
            image = store.get(entry.name)
            status = "built" if image is not None else "not built"
        except SandboxError as exc:
            status = "invalid"
            problems += 1
            _say(f"warning: {exc.message}", sys.stderr)
        rows.append([entry.name, entry.origin, status, str(entry.path)])
    if len(rows) == 1:
        _say("no profiles found in: " + ", ".join(str(d) for _, d in locations.profile_dirs()))
        return ExitStatus.OK
    _say(_table(rows))
    return ExitStatus.USAGE if problems else ExitStatus.OK


def cmd_image_build(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore
    from sandboxapp.imagebuild import build_image

    profile = _resolve_profile(args.profile, locations)
    store = ImageStore(locations.image_dir)
    progress = TerminalProgress(sys.stderr)
    try:
        image = build_image(profile, store, progress, force=args.force)
    finally:
        progress.done.set()
    if image is None:
        existing = store.require(profile.name)
        _say(f"the image for {profile.name!r} is already built ({existing.meta.built_at}); "
             "--force rebuilds it")
        return ExitStatus.OK
    progress.finish(
        f"built {image.name}: {_human_size(image.meta.size_bytes)}, UIDs {image.meta.uid_range},"
        f" in {image.path}"
    )
    return ExitStatus.OK


def cmd_image_list(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore

    images = ImageStore(locations.image_dir).images()
    if not images:
        _say(f"no images in {locations.image_dir}")
        return ExitStatus.OK
    rows = [["PROFILE", "SUITE", "SIZE", "BUILT", "UID RANGE"]]
    for image in images:
        meta = image.meta
        rows.append([meta.profile, meta.suite, _human_size(meta.size_bytes),
                     image.built_at.strftime("%Y-%m-%d %H:%M UTC"), str(meta.uid_range)])
    _say(_table(rows))
    return ExitStatus.OK


def cmd_image_remove(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore

    path = ImageStore(locations.image_dir).remove(args.profile)
    _say(f"removed {path}")
    return ExitStatus.OK


def cmd_run(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.hostfacts import host_facts
    from sandboxapp.launchplan import describe_plan, plan_launch

    profile = _resolve_profile(args.profile, locations)
    extra = list(args.args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    plan = plan_launch(profile, extra, locations)
    if args.dry_run:
        _say(describe_plan(plan, host_facts()))
        return ExitStatus.OK
    from sandboxapp.launcher import Launch

    def warn(text: str) -> None:
        _say(f"sandboxapp: warning: {text}", sys.stderr)

    return Launch(plan, locations, os.environ, warn=warn, stderr=sys.stderr).run()


def cmd_cleanup(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.ledger import RunDir
    from sandboxapp.recovery import reconcile

    messages = reconcile(RunDir(locations.run_dir))
    for message in messages:
        _say(message)
    if not messages:
        _say("nothing to clean up")
    return ExitStatus.OK


def cmd_setup(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.install import setup, uninstall

    report = uninstall() if args.uninstall else setup(locations, args.add_user)
    for line in report.lines:
        _say(line)
    return ExitStatus.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandboxapp",
        description="Run desktop programs in throw-away systemd-nspawn containers.",
    )
    parser.add_argument("--version", action="version", version=f"sandboxapp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="show the profiles, where they come from, image state")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("run", help="run a profile's program in a fresh sandbox")
    p.add_argument("--dry-run", action="store_true",
                   help="print the systemd-nspawn command and the grants; change nothing")
    p.add_argument("profile", metavar="PROFILE", help="a profile name or a path to a .toml file")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="arguments appended to the profile's command")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("cleanup",
                            help="undo what crashed launches left: grants, sockets, layers")
    p.set_defaults(func=cmd_cleanup)

    p = commands.add_parser("setup", help="let desktop users launch sandboxes (as root)")
    p.add_argument("--add-user", action="append", default=[], metavar="NAME",
                   help="also add this user to the sandboxapp group (repeatable)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove what setup installed (images and data stay)")
    p.set_defaults(func=cmd_setup)

    image = commands.add_parser("image", help="build, list and remove pristine images")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = image_commands.add_parser("build", help="build a profile's image (as root)")
    p.add_argument("--force", action="store_true", help="rebuild an image that exists")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_image_build)
    p = image_commands.add_parser("list", help="show the built images")
    p.set_defaults(func=cmd_image_list)
    p = image_commands.add_parser("remove", help="delete a profile's image")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_image_remove)
    return parser


def report(error: SandboxError, stream: TextIO) -> None:
    stream.write(f"sandboxapp: {error.message}\n")
    if error.detail:
        for line in error.detail.splitlines():
            stream.write(f"    {line}\n")
    if error.hint:
        stream.write(f"hint: {error.hint}\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, Locations], int] = args.func
    try:
        return int(func(args, Locations.from_environment()))
    except SandboxError as error:
        report(error, sys.stderr)
        return int(error.status)
    except KeyboardInterrupt:
        sys.stderr.write("sandboxapp: interrupted\n")
        return 130

