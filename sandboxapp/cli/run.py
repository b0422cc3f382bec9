"""`sandboxapp run`: a launch, with its image made ready first and its run log."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxapp import output
from sandboxapp.cli.progress import TerminalProgress
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.output import report, say
from sandboxapp.paths import Locations
from sandboxapp.profile.find import find_profile, load_profile_file
from sandboxapp.profile.model import Profile, X11Access

if TYPE_CHECKING:
    from sandboxapp.host.notify import RunLog
    from sandboxapp.launch.helperclient import PendingHelper
    from sandboxapp.launch.launcher import Launch

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def resolve_profile(arg: str, locations: Locations) -> Profile:
    # A path (with a slash or ending in .toml) names a profile file directly; anything else is
    # a profile name looked up in the profile directories.
    if "/" in arg or arg.endswith(".toml"):
        return load_profile_file(Path(arg), origin="file")
    return find_profile(arg, locations)


def _image_work(action: str, profile: Profile, locations: Locations) -> None:
    """Build or update an image: here when root, through the privileged helper otherwise."""
    if os.geteuid() != 0:
        from sandboxapp.launch.launcher import helper_image_work

        helper_image_work(action, profile)
        return
    from sandboxapp.image.build import build_image
    from sandboxapp.image.rework import update_image
    from sandboxapp.image.store import ImageStore

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
    # The command line's entry has usually started it (cli.early_helper); else, first of all
    # here: the privileged helper's interpreter then loads while this one does.
    helper: PendingHelper | None = getattr(args, "helper", None)
    with ExitStack() as stack:
        if helper is None and not args.dry_run and os.geteuid() != 0:
            from sandboxapp.launch.helperclient import PendingHelper

            helper = PendingHelper(os.environ)
            stack.callback(helper.abandon)
        return _run(args, locations, helper)


def _run(args: argparse.Namespace, locations: Locations, helper: PendingHelper | None) -> int:
    from sandboxapp.fs.safepath import DesktopUser
    from sandboxapp.plan import hand_arguments, plan_display, plan_downloads, plan_launch

    if args.program is not None and not args.program:
        raise SandboxError("--command needs a program: a path, or a name on the image's PATH",
                           status=ExitStatus.USAGE)
    profile = resolve_profile(args.profile, locations)
    extra = list(args.args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    given = extra
    # Files named on the command line are bound into the sandbox, and named by their path there.
    extra, handed = hand_arguments(given)
    shown = plan_display(profile, os.environ, check=not args.dry_run)
    user = DesktopUser.from_environment(os.environ)
    downloads = plan_downloads(profile, locations, user)
    if args.dry_run:
        from sandboxapp.features.spec import describe_plan
        from sandboxapp.system.hostfacts import host_facts

        plan = plan_launch(profile, extra, locations, shown, program=args.program,
                           downloads=downloads, handed=handed)
        say(describe_plan(plan, host_facts()))
        return ExitStatus.OK
    from sandboxapp.host.notify import RunLog, Tee
    from sandboxapp.launch.launcher import Launch

    log: RunLog | None = None
    problem = None
    try:
        log = RunLog(locations.state_home, profile.name, user)
    except (SandboxError, OSError) as exc:
        # The log helps; it is not worth refusing the launch over.
        problem = f"no run log: {exc}"
    out = Tee(sys.stderr, log.stream) if log else Tee(sys.stderr)

    def warn(text: str) -> None:
        output.warn(text, out)

    if problem:
        warn(problem)
    try:
        if log:
            log.stream.write(f"# sandboxapp run {shlex.join([profile.name, *given])}\n")
        from sandboxapp.image.ready import make_ready
        from sandboxapp.image.store import ImageStore

        make_ready(profile, ImageStore(locations.image_dir), warn,
                   on_desktop=not sys.stderr.isatty(),
                   work=functools.partial(_image_work, profile=profile, locations=locations))
        # Planned once the image is ready: the plan holds the image the launch starts.
        plan = plan_launch(profile, extra, locations, shown, program=args.program,
                           downloads=downloads, handed=handed, ready=True)
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
    if (launch.joined or launch.supervisor.signalled is not None
            or plan.profile.sandbox.x11 is X11Access.NONE or elapsed >= SILENT_EXIT_SECONDS
            or launch.relay.seen.is_set()):
        return
    where = f"; its run log: {log.path}" if log else ""
    text = (f"{plan.command[0]} ended after {elapsed:.1f} s with exit status {status} and no "
            f"output{where}")
    warn(text)
    if not sys.stderr.isatty():
        from sandboxapp.host.notify import notify

        notify(os.environ, f"sandboxapp: {plan.profile.name} ended at once", text)


def add_run(commands: Subparsers) -> None:
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

