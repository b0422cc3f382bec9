"""The command line: the only part of sandboxapp that prints for users."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sandboxapp import __version__
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import Locations
from sandboxapp.profile import Profile, find_profile, iter_profile_files, load_profile_file

if TYPE_CHECKING:
    from sandboxapp.desktop import DesktopEntries
    from sandboxapp.helperclient import PendingHelper
    from sandboxapp.image import Image
    from sandboxapp.launcher import Launch
    from sandboxapp.notify import RunLog
    from sandboxapp.supervisor import TextSink

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


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


def _image_state(name: str, image: Image, locations: Locations) -> str:
    from sandboxapp.image import image_is_stale

    try:
        profile = find_profile(name, locations)
    except SandboxError:
        return "no profile"
    return "stale" if image_is_stale(profile, image) else "current"


def cmd_image_list(args: argparse.Namespace, locations: Locations) -> int:
    from datetime import UTC, datetime

    from sandboxapp.image import ImageStore

    images = ImageStore(locations.image_dir).images()
    if not images:
        _say(f"no images in {locations.image_dir}")
        return ExitStatus.OK
    rows = [["PROFILE", "SUITE", "SIZE", "BUILT", "UPDATED", "AGE", "STATE", "UID RANGE"]]
    for image in images:
        meta = image.meta
        updated = (datetime.fromisoformat(meta.updated_at).strftime("%Y-%m-%d %H:%M")
                   if meta.updated_at else "-")
        age = datetime.now(UTC) - meta.refreshed_at
        rows.append([meta.profile, meta.suite, _human_size(meta.size_bytes),
                     image.built_at.strftime("%Y-%m-%d %H:%M"), updated, f"{age.days} d",
                     _image_state(meta.profile, image, locations), str(meta.uid_range)])
    _say(_table(rows))
    return ExitStatus.OK


def cmd_image_update(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore
    from sandboxapp.imagebuild import update_image

    store = ImageStore(locations.image_dir)
    if args.all:
        names = [image.name for image in store.images()]
    elif args.profile:
        names = [args.profile]
    else:
        raise SandboxError("name a profile, or give --all", status=ExitStatus.USAGE)
    for name in names:
        profile = _resolve_profile(name, locations)
        progress = TerminalProgress(sys.stderr)
        try:
            image, changes = update_image(profile, store, progress)
        finally:
            progress.done.set()
        progress.finish(f"updated {image.name}: {len(changes)} package(s) changed")
        for change in changes:
            _say(f"{image.name}: {change.name} {change.old or '(new)'} -> "
                 f"{change.new or '(removed)'}")
    return ExitStatus.OK


def cmd_shell(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore
    from sandboxapp.imagebuild import shell_in_image

    profile = _resolve_profile(args.profile, locations)
    progress = TerminalProgress(sys.stderr)
    try:
        status, kept = shell_in_image(profile, ImageStore(locations.image_dir), progress,
                                      discard=args.discard)
    finally:
        progress.done.set()
    progress.finish(f"changes to {profile.name}'s image " + ("kept" if kept else "discarded"))
    return status


def cmd_image_remove(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore

    path = ImageStore(locations.image_dir).remove(args.profile)
    _say(f"removed {path}")
    return ExitStatus.OK


def _prepare_image(profile: Profile, locations: Locations,
                   warn: Callable[[str], None]) -> bool:
    """Before a launch: build a missing image, update one that is too old where the profile
    asks for it (or say how), say when the profile has moved on. Whether the image changed."""
    from datetime import UTC, datetime

    from sandboxapp.image import ImageStore, image_is_stale

    image = ImageStore(locations.image_dir).get(profile.name)
    if image is None:
        if not sys.stderr.isatty():
            from sandboxapp.notify import notify

            notify(os.environ, f"sandboxapp: starting {profile.name} for the first time",
                   "Its image is being built: this takes a minute or two.")
        warn(f"the image for {profile.name} is not built yet: building it first "
             "(a minute or two)")
        _image_work("build", profile, locations)
        return True
    if image_is_stale(profile, image):
        warn(f"the image for {profile.name} is stale: its profile's [image] section changed; "
             f"rebuild it with: sandboxapp image build {profile.name}")
        return False
    age = datetime.now(UTC) - image.meta.refreshed_at
    if age.days >= profile.updates.update_after_days:
        if profile.updates.auto_update:
            warn(f"the image for {profile.name} is {age.days} days old: updating it first")
            try:
                _image_work("update", profile, locations)
            except SandboxError as error:
                # The image there is still a working one: start it, and say why it is old.
                warn(f"{error.message}; starting the image as it is")
                return False
            return True
        warn(f"the image for {profile.name} is {age.days} days old; update it with: "
             f"sandboxapp image update {profile.name}")
    return False


def _image_work(action: str, profile: Profile, locations: Locations) -> None:
    """Build or update an image: here when root, through the privileged helper otherwise."""
    if os.geteuid() != 0:
        from sandboxapp.launcher import helper_image_work

        helper_image_work(action, profile)
        return
    from sandboxapp.image import ImageStore
    from sandboxapp.imagebuild import build_image, update_image

    store = ImageStore(locations.image_dir)
    progress = TerminalProgress(sys.stderr)
    try:
        if action == "build":
            build_image(profile, store, progress)
        else:
            update_image(profile, store, progress)
    finally:
        progress.done.set()
    progress.finish(f"the image for {profile.name} is ready")


def cmd_run(args: argparse.Namespace, locations: Locations) -> int:
    helper = None
    if not args.dry_run and os.geteuid() != 0:
        # First of all: the privileged helper's interpreter then loads while this one does.
        from sandboxapp.helperclient import PendingHelper

        helper = PendingHelper(os.environ)
    try:
        return _run(args, locations, helper)
    finally:
        if helper is not None:
            helper.abandon()


def _run(args: argparse.Namespace, locations: Locations, helper: PendingHelper | None) -> int:
    from sandboxapp.hostfacts import host_facts
    from sandboxapp.launchplan import describe_plan, plan_launch

    if args.program is not None and not args.program:
        raise SandboxError("--command needs a program: a path, or a name on the image's PATH",
                           status=ExitStatus.USAGE)
    profile = _resolve_profile(args.profile, locations)
    extra = list(args.args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    plan = plan_launch(profile, extra, locations, program=args.program)
    if args.dry_run:
        _say(describe_plan(plan, host_facts()))
        return ExitStatus.OK
    from sandboxapp.launcher import Launch
    from sandboxapp.notify import RunLog, Tee
    from sandboxapp.safepath import DesktopUser

    log: RunLog | None = None
    problem = None
    try:
        log = RunLog(locations.state_home, profile.name,
                     DesktopUser.from_environment(os.environ))
    except (SandboxError, OSError) as exc:
        # The log helps; it is not worth refusing the launch over.
        problem = f"no run log: {exc}"
    out = Tee(sys.stderr, log.stream) if log else Tee(sys.stderr)

    def warn(text: str) -> None:
        out.write(f"sandboxapp: warning: {text}\n")
        out.flush()

    if problem:
        warn(problem)
    try:
        if log:
            log.stream.write(f"# sandboxapp run {shlex.join([profile.name, *extra])}\n")
        if _prepare_image(profile, locations, warn):
            plan = plan_launch(profile, extra, locations, program=args.program)
        launch = Launch(plan, locations, os.environ, warn=warn, stderr=out, helper=helper)
        started = time.monotonic()
        status = launch.run()
        _say_if_silent(launch, status, time.monotonic() - started, log, warn)
        if log:
            log.stream.write(f"# exit status {status}\n")
        return status
    except SandboxError as error:
        if log:
            report(error, log.stream)
        raise
    finally:
        if log:
            log.close()


# A desktop program that ends within this many seconds of its launch without a word on its
# output has most likely not started at all (its window never showed): the launch says so,
# rather than leave a user clicking a menu entry that does nothing.
SILENT_EXIT_SECONDS = 10.0


def _say_if_silent(launch: Launch, status: int, elapsed: float, log: RunLog | None,
                   warn: Callable[[str], None]) -> None:
    plan = launch.plan
    if (launch.joined or launch.supervisor.signalled is not None or not plan.profile.sandbox.x11
            or elapsed >= SILENT_EXIT_SECONDS or launch.relay.seen.is_set()):
        return
    where = f"; its run log: {log.path}" if log else ""
    text = (f"{plan.command[0]} ended after {elapsed:.1f} s with exit status {status} and no "
            f"output{where}")
    warn(text)
    if not sys.stderr.isatty():
        from sandboxapp.notify import notify

        notify(os.environ, f"sandboxapp: {plan.profile.name} ended at once", text)


def cmd_cleanup(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.ledger import RunDir
    from sandboxapp.recovery import reconcile

    run_dir = RunDir(locations.run_dir)
    directories = [run_dir]
    if os.geteuid() == 0:
        # Root cleans up after desktop users' launches too (the helper's side of them).
        directories += run_dir.user_dirs()
    messages = [message for directory in directories for message in reconcile(directory)]
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


def _entries(locations: Locations) -> DesktopEntries:
    from sandboxapp.desktop import DesktopEntries
    from sandboxapp.safepath import DesktopUser

    return DesktopEntries(locations.data_home, DesktopUser.from_environment(os.environ))


def cmd_desktop_install(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image import ImageStore

    profile = _resolve_profile(args.profile, locations)
    image = ImageStore(locations.image_dir).get(profile.name)
    installed = _entries(locations).install(profile, image.rootfs if image else None)
    _say(f"installed {installed.path} (from {installed.source})")
    for icon in installed.icons:
        _say(f"installed {icon}")
    if image is None:
        _say(f"note: the image is not built yet: sandboxapp image build {profile.name}")
    return ExitStatus.OK


def cmd_desktop_remove(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.profile import check_profile_name

    for path in _entries(locations).remove(check_profile_name(args.profile)):
        _say(f"removed {path}")
    return ExitStatus.OK


def cmd_desktop_list(args: argparse.Namespace, locations: Locations) -> int:
    entries = _entries(locations).installed()
    if not entries:
        _say(f"no sandboxapp menu entries in {locations.data_home / 'applications'}")
    for name, path in entries:
        _say(f"{name}  {path}")
    return ExitStatus.OK


def cmd_ps(args: argparse.Namespace, locations: Locations) -> int:
    import json

    from sandboxapp.manage import running_sandboxes

    sandboxes = running_sandboxes(locations)
    if args.json:
        _say(json.dumps([s.to_json() for s in sandboxes], indent=2))
        return ExitStatus.OK
    if not sandboxes:
        _say("no sandboxes are running")
        return ExitStatus.OK
    rows = [["PROFILE", "LAUNCHER", "CONTAINER", "HOST UID", "UPTIME", "CPU", "MEMORY",
             "GRANTS"]]
    for s in sandboxes:
        minutes, seconds = divmod(int(s.uptime_seconds), 60)
        rows.append([s.profile, str(s.launcher_pid), str(s.container_pid or "-"),
                     str(s.host_uid or "-"), f"{minutes}:{seconds:02d}", f"{s.cpu_percent}%",
                     _human_size(s.memory_bytes), ", ".join(s.grants) or "-"])
    _say(_table(rows))
    return ExitStatus.OK


def cmd_stop(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.manage import stop
    from sandboxapp.profile import check_profile_name

    took = stop(locations, check_profile_name(args.profile), args.timeout)
    _say(f"stopped {args.profile} in {took:.1f} s")
    return ExitStatus.OK


def cmd_doctor(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.doctor import Status, run_checks

    checks = run_checks(locations, os.environ)
    width = max(len(c.name) for c in checks)
    for check in checks:
        line = f"{check.status.value:4}  {check.name.ljust(width)}  {check.detail}"
        if check.hint and check.status is not Status.OK:
            line += f" (fix: {check.hint})"
        _say(line)
    return ExitStatus.FAILURE if any(c.status is Status.FAIL for c in checks) else ExitStatus.OK


def _add_list(commands: Subparsers) -> None:
    p = commands.add_parser("list", help="show the profiles, where they come from, image state")
    p.set_defaults(func=cmd_list)


def _add_run(commands: Subparsers) -> None:
    p = commands.add_parser("run", help="run a profile's program in a fresh sandbox")
    p.add_argument("--dry-run", action="store_true",
                   help="print the systemd-nspawn command and the grants; change nothing")
    p.add_argument("--command", dest="program", metavar="PROG",
                   help="run PROG (a path or a name on the image's PATH) with ARGS in place of "
                        "the profile's command")
    p.add_argument("profile", metavar="PROFILE", help="a profile name or a path to a .toml file")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="arguments appended to the profile's command (or to PROG)")
    p.set_defaults(func=cmd_run)


def _add_ps(commands: Subparsers) -> None:
    p = commands.add_parser("ps", help="list the running sandboxes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ps)


def _add_stop(commands: Subparsers) -> None:
    p = commands.add_parser("stop", help="stop a running sandbox gracefully")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long the app gets to exit before it is killed (default 10)")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_stop)


def _add_doctor(commands: Subparsers) -> None:
    p = commands.add_parser("doctor", help="check this machine, one line per check")
    p.set_defaults(func=cmd_doctor)


def _add_shell(commands: Subparsers) -> None:
    p = commands.add_parser("shell", help="a root shell in a profile's pristine image; "
                            "changes land when it exits with 0 (as root)")
    p.add_argument("--discard", action="store_true", help="throw the changes away")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_shell)


def _add_cleanup(commands: Subparsers) -> None:
    p = commands.add_parser("cleanup",
                            help="undo what crashed launches left: grants, sockets, layers")
    p.set_defaults(func=cmd_cleanup)


def _add_setup(commands: Subparsers) -> None:
    p = commands.add_parser("setup", help="let desktop users launch sandboxes (as root)")
    p.add_argument("--add-user", action="append", default=[], metavar="NAME",
                   help="also add this user to the sandboxapp group (repeatable)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove what setup installed (images and data stay)")
    p.set_defaults(func=cmd_setup)


def _add_desktop(commands: Subparsers) -> None:
    desktop = commands.add_parser("desktop", help="menu entries for profiles")
    desktop_commands = desktop.add_subparsers(dest="desktop_command", required=True,
                                              metavar="ACTION")
    p = desktop_commands.add_parser("install", help="add a menu entry that runs the profile")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_desktop_install)
    p = desktop_commands.add_parser("remove", help="remove a profile's menu entry and icons")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_desktop_remove)
    p = desktop_commands.add_parser("list", help="show the installed menu entries")
    p.set_defaults(func=cmd_desktop_list)


def _add_image(commands: Subparsers) -> None:
    image = commands.add_parser("image", help="build, list and remove pristine images")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = image_commands.add_parser("build", help="build a profile's image (as root)")
    p.add_argument("--force", action="store_true", help="rebuild an image that exists")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_image_build)
    p = image_commands.add_parser("update", help="apt update and dist-upgrade an image, "
                                  "atomically (as root)")
    p.add_argument("--all", action="store_true", help="every built image")
    p.add_argument("profile", metavar="PROFILE", nargs="?")
    p.set_defaults(func=cmd_image_update)
    p = image_commands.add_parser("list", help="show the built images")
    p.set_defaults(func=cmd_image_list)
    p = image_commands.add_parser("remove", help="delete a profile's image")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_image_remove)


COMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "list": _add_list, "run": _add_run, "ps": _add_ps, "stop": _add_stop,
    "doctor": _add_doctor, "shell": _add_shell, "cleanup": _add_cleanup, "setup": _add_setup,
    "desktop": _add_desktop, "image": _add_image,
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


def report(error: SandboxError, stream: TextSink) -> None:
    stream.write(f"sandboxapp: {error.message}\n")
    if error.detail:
        for line in error.detail.splitlines():
            stream.write(f"    {line}\n")
    if error.hint:
        stream.write(f"hint: {error.hint}\n")
    stream.flush()


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
            from sandboxapp.notify import notify

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
