"""The commands around launches: list, ps, stop, cleanup, setup, desktop, doctor."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from sandboxapp.cli.run import resolve_profile
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.output import human_size, say, table, warn
from sandboxapp.paths import Locations
from sandboxapp.profile.find import iter_profile_files, load_profile_file

if TYPE_CHECKING:
    from sandboxapp.host.desktop import DesktopEntries

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def cmd_list(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.store import ImageStore

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
            warn(exc.message)
        rows.append([entry.name, entry.origin, status, str(entry.path)])
    if len(rows) == 1:
        say("no profiles found in: " + ", ".join(str(d) for _, d in locations.profile_dirs()))
        return ExitStatus.OK
    say(table(rows))
    return ExitStatus.USAGE if problems else ExitStatus.OK


def cmd_cleanup(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.launch.recovery import reconcile
    from sandboxapp.undo.ledger import RunDir

    run_dir = RunDir(locations.run_dir)
    directories = [run_dir]
    if os.geteuid() == 0:
        # Root cleans up after desktop users' launches too (the helper's side of them).
        directories += run_dir.user_dirs()
    messages = [message for directory in directories for message in reconcile(directory)]
    for message in messages:
        say(message)
    if not messages:
        say("nothing to clean up")
    return ExitStatus.OK


def cmd_setup(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.helper.install import setup, uninstall

    report = uninstall() if args.uninstall else setup(locations, args.add_user,
                                                      dict(os.environ))
    for line in report.lines:
        say(line)
    return ExitStatus.OK


def _entries(locations: Locations) -> DesktopEntries:
    from sandboxapp.fs.safepath import DesktopUser
    from sandboxapp.host.desktop import DesktopEntries

    return DesktopEntries(locations.data_home, DesktopUser.from_environment(os.environ))


def cmd_desktop_install(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.store import ImageStore

    profile = resolve_profile(args.profile, locations)
    image = ImageStore(locations.image_dir).get(profile.name)
    installed = _entries(locations).install(profile, image.rootfs if image else None)
    say(f"installed {installed.path} (from {installed.source})")
    for icon in installed.icons:
        say(f"installed {icon}")
    if image is None:
        say(f"note: the image is not built yet: sandboxapp image build {profile.name}")
    return ExitStatus.OK


def cmd_desktop_remove(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.profile.model import check_profile_name

    for path in _entries(locations).remove(check_profile_name(args.profile)):
        say(f"removed {path}")
    return ExitStatus.OK


def cmd_desktop_list(args: argparse.Namespace, locations: Locations) -> int:
    entries = _entries(locations).installed()
    if not entries:
        say(f"no sandboxapp menu entries in {locations.data_home / 'applications'}")
    for name, path in entries:
        say(f"{name}  {path}")
    return ExitStatus.OK


def cmd_ps(args: argparse.Namespace, locations: Locations) -> int:
    import json

    from sandboxapp.launch.running import running_sandboxes

    sandboxes = running_sandboxes(locations)
    if args.json:
        say(json.dumps([s.to_json() for s in sandboxes], indent=2))
        return ExitStatus.OK
    if not sandboxes:
        say("no sandboxes are running")
        return ExitStatus.OK
    rows = [["PROFILE", "LAUNCHER", "CONTAINER", "HOST UID", "UPTIME", "CPU", "MEMORY",
             "GRANTS"]]
    for s in sandboxes:
        minutes, seconds = divmod(int(s.uptime_seconds), 60)
        rows.append([s.profile, str(s.launcher_pid), str(s.container_pid or "-"),
                     str(s.host_uid or "-"), f"{minutes}:{seconds:02d}", f"{s.cpu_percent}%",
                     human_size(s.memory_bytes), ", ".join(s.grants) or "-"])
    say(table(rows))
    return ExitStatus.OK


def cmd_stop(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.launch.running import stop
    from sandboxapp.profile.model import check_profile_name

    took = stop(locations, check_profile_name(args.profile), args.timeout)
    say(f"stopped {args.profile} in {took:.1f} s")
    return ExitStatus.OK


def cmd_reset(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.cli.run import resolve_profile
    from sandboxapp.fs.safepath import DesktopUser
    from sandboxapp.launch.reset import reset

    said = reset(resolve_profile(args.profile, locations), locations,
                 DesktopUser.from_environment(os.environ))
    if said is not None:
        say(said)
    return ExitStatus.OK


def cmd_doctor(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.doctor import Status, run_checks

    checks = run_checks(locations, os.environ)
    width = max(len(c.name) for c in checks)
    for check in checks:
        line = f"{check.status.value:4}  {check.name.ljust(width)}  {check.detail}"
        if check.hint and check.status is not Status.OK:
            line += f" (fix: {check.hint})"
        say(line)
    return ExitStatus.FAILURE if any(c.status is Status.FAIL for c in checks) else ExitStatus.OK


def add_list(commands: Subparsers) -> None:
    p = commands.add_parser("list", help="show the profiles, where they come from, image state")
    p.set_defaults(func=cmd_list)


def add_ps(commands: Subparsers) -> None:
    p = commands.add_parser("ps", help="list the running sandboxes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ps)


def add_stop(commands: Subparsers) -> None:
    p = commands.add_parser("stop", help="stop a running sandbox gracefully")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long the app gets to exit before it is killed (default 10)")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_stop)


def add_reset(commands: Subparsers) -> None:
    p = commands.add_parser("reset", help="drop the changes a stateful profile kept for you "
                            "(never its persistent directories)")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_reset)


def add_doctor(commands: Subparsers) -> None:
    p = commands.add_parser("doctor", help="check this machine, one line per check")
    p.set_defaults(func=cmd_doctor)


def add_cleanup(commands: Subparsers) -> None:
    p = commands.add_parser("cleanup",
                            help="undo what crashed launches left: grants, sockets, layers")
    p.set_defaults(func=cmd_cleanup)


def add_setup(commands: Subparsers) -> None:
    p = commands.add_parser("setup", help="let desktop users launch sandboxes (as root)")
    p.add_argument("--add-user", action="append", default=[], metavar="NAME",
                   help="also add this user to the sandboxapp group (repeatable)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove what setup installed (images and data stay)")
    p.set_defaults(func=cmd_setup)


def add_desktop(commands: Subparsers) -> None:
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

