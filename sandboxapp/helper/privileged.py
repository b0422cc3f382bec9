"""The privileged helper: the root side of a desktop user's launch, reached through sudo.

It takes one narrow request (a profile name and file, the user's data directory, the display
number, the sound socket the session side made, the app's arguments), trusts none of it, and
does only what needs root: the writable layer, the checked binds and systemd-nspawn. The user is
the one sudo names (SUDO_UID); the profile is read again, from a descriptor opened without
following symlinks; a profile that is not in a root-owned profile directory may only bind and
keep the user's own files. A helper started ahead of its request gets it on its input, the
launcher's control channel (system/control.py), which then opens the app's gate, and stops the
app gracefully when it asks to or ends (the user's launcher is gone). Every launch is logged
to a root-owned file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError, finish
from sandboxapp.features import Feature, features_for
from sandboxapp.features.display import DisplayAccess
from sandboxapp.features.request import Action, HelperRequest, refused
from sandboxapp.features.wayland import WaylandAccess
from sandboxapp.fs.safepath import DesktopUser, read_user_file
from sandboxapp.image.store import ImageStore
from sandboxapp.launch.container import ContainerRequest, ContainerSide
from sandboxapp.launch.helperclient import PENDING
from sandboxapp.launch.join import hand_to_running, join
from sandboxapp.launch.supervisor import STOP_TIMEOUT, Supervisor
from sandboxapp.output import report, say, warn
from sandboxapp.paths import (
    DEFAULT_IMAGE_DIR,
    DEFAULT_RUN_DIR,
    SHIPPED_PROFILE_DIR,
    SYSTEM_PROFILE_DIR,
    Locations,
)
from sandboxapp.plan import LaunchPlan, Shown, plan_launch
from sandboxapp.profile.find import profile_from_bytes
from sandboxapp.profile.model import (
    MAX_FILE_SIZE,
    Profile,
    X11Access,
    check_profile_name,
    invalid,
)
from sandboxapp.system.control import ControlChannel, Word
from sandboxapp.undo.ledger import RunDir

TRUSTED_PROFILE_DIRS = (SYSTEM_PROFILE_DIR, SHIPPED_PROFILE_DIR)


def log_safe(text: str) -> str:
    """text as one log line: a backslash, and any character that is not printable (a newline
    in a user's path would forge a line of its own), written as a Python escape."""
    return "".join(c if c.isprintable() and c != "\\" else
                   c.encode("unicode_escape").decode("ascii") for c in text)


def _log(store: ImageStore, text: str) -> None:
    text = log_safe(text)
    store.ensure()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    fd = os.open(store.log_dir / "privileged.log",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as stream:
        stream.write(f"{stamp} {text}\n")


def _read_profile(request: HelperRequest, user: DesktopUser) -> tuple[Profile, bool]:
    """The profile, read again from a descriptor: (profile, from a trusted directory)."""
    name = check_profile_name(request.profile)
    path = request.profile_file
    if path.name != f"{name}.toml":
        raise invalid(f"the profile file {path} is not named {name}.toml")
    trusted = path.parent in TRUSTED_PROFILE_DIRS
    raw = read_user_file(path, user, trusted=trusted, limit=MAX_FILE_SIZE)
    return profile_from_bytes(name, path, "system" if trusted else "user", raw), trusted


class _StderrProgress:
    def stage(self, text: str) -> None:
        sys.stderr.write(f"sandboxapp: {text}\n")
        sys.stderr.flush()

    def warn(self, text: str) -> None:
        warn(text)


def image_work(request: HelperRequest, user: DesktopUser, locations: Locations) -> int:
    action = request.action.value
    profile, trusted = _read_profile(request, user)
    if not trusted:
        raise SandboxError(
            f"images are built and updated for users only from trusted profiles "
            f"(in {', '.join(map(str, TRUSTED_PROFILE_DIRS))})",
            hint=f"ask an administrator to run: sudo sandboxapp image {action} "
                 f"{profile.name}", status=ExitStatus.LAUNCHER)
    from sandboxapp.image.build import build_image  # not needed to launch
    from sandboxapp.image.rework import update_image

    store = ImageStore(locations.image_dir)
    _log(store, f"uid={user.uid} profile={profile.name} image {action}")
    if request.action is Action.UPDATE:
        _check_update_interval(store, profile.name)
    if request.action is Action.BUILD:
        build_image(profile, store, _StderrProgress())
    else:
        update_image(profile, store, _StderrProgress())
    return ExitStatus.OK


# A user may have root update a trusted image this often at most (root itself, any time): an
# update takes the archive's bandwidth, the disk and minutes of root's time.
USER_UPDATE_INTERVAL = timedelta(minutes=10)


def _check_update_interval(store: ImageStore, name: str) -> None:
    since = datetime.now(UTC) - store.require(name).meta.refreshed_at
    if since < USER_UPDATE_INTERVAL:
        minutes = USER_UPDATE_INTERVAL.seconds // 60
        raise SandboxError(
            f"the image for {name} got its packages {int(since.total_seconds())} s ago; "
            f"users may have it updated once in {minutes} minutes",
            hint=f"an administrator may update it at any time: sudo sandboxapp image update "
                 f"{name}", status=ExitStatus.USAGE)


def _checked_plan(request: HelperRequest, user: DesktopUser,
                  locations: Locations) -> tuple[LaunchPlan, bool, tuple[Feature, ...]]:
    """The request, re-read and re-checked: (plan, profile trusted, its features); the X and
    sound directories are checked against the profile too."""
    profile, trusted = _read_profile(request, user)
    # The display the request names makes the plan's (each grant's part is checked by its
    # feature, features_for); a profile without x11 gets none, whatever the request says, and
    # one shown natively on Wayland needs none.
    number = DisplayAccess.number_in(request.grants.get(DisplayAccess.KEY))
    native = (WaylandAccess.socket_in(request.grants.get(WaylandAccess.KEY))
              if profile.sandbox.wayland else None)
    if profile.sandbox.x11 is not X11Access.NONE and number is None and native is None:
        raise SandboxError("the profile needs the X display, and none was given",
                           status=ExitStatus.LAUNCHER)
    if request.program is not None and not request.program:
        raise invalid("--command needs a program")
    shown = Shown.chosen(number if profile.sandbox.x11 is not X11Access.NONE else None, native)
    plan = plan_launch(profile, request.args, locations, shown, instance=f"u{user.uid}",
                       program=request.program,
                       downloads=_checked_downloads(request.downloads, profile), ready=True)
    return plan, trusted, features_for(plan, request.grants)


def _checked_downloads(downloads: Path | None, profile: Profile) -> Path | None:
    """The request's downloads directory: the profile's (sandbox.downloads) by name, or none
    where the profile has none. It is the user's own (checked as every persistent directory
    is, by the root side)."""
    name = profile.sandbox.downloads
    if (downloads is None) != (name is None) or (downloads is not None and downloads.name != name):
        raise invalid(f"the downloads directory is not the profile's ({name or 'none'})")
    return downloads


def reset_state(request: HelperRequest, user: DesktopUser, locations: Locations) -> int:
    """Drop what a stateful profile kept for the user sudo names, and nobody else."""
    from sandboxapp.launch.reset import reset_here, said

    profile, _ = _read_profile(request, user)
    _log(ImageStore(locations.image_dir), f"uid={user.uid} profile={profile.name} reset")
    say(said(profile, reset_here(profile, locations, user)))
    return ExitStatus.OK


def join_running(request: HelperRequest, user: DesktopUser, locations: Locations) -> int:
    plan, _, _ = _checked_plan(request, user, locations)
    _log(ImageStore(locations.image_dir),
         f"uid={user.uid} profile={plan.profile.name} join args={plan.command!r}")
    return join(RunDir(locations.run_dir), plan, user)


def hand_running(request: HelperRequest, user: DesktopUser, locations: Locations,
                 control: ControlChannel | None, fds: tuple[int, ...]) -> int:
    """Hand the user's running sandbox the files beside the request (the user's, open for
    reading), and answer on the channel where each went."""
    if control is None:
        raise refused("'hand' comes on the control channel, with the files beside it")
    plan, _, _ = _checked_plan(request, user, locations)
    _log(ImageStore(locations.image_dir),
         f"uid={user.uid} profile={plan.profile.name} hand files={list(request.files)!r}")
    try:
        went = hand_to_running(RunDir(locations.run_dir), plan, user,
                               tuple(zip(fds, request.files, strict=True)))
    except SandboxError as error:
        control.send(Word.REFUSED, error.message)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    for path in went:
        control.send(Word.HANDED, str(path))
    return ExitStatus.OK


# How long a launch waits for the root side of the user's last launch to finish stopping: the
# app's default grace to exit, and the take-back.
STOPPING_WAIT = STOP_TIMEOUT + 5.0


def launch(request: HelperRequest, user: DesktopUser, locations: Locations,
           control: ControlChannel | None, fds: tuple[int, ...] = ()) -> int:
    """A new sandbox. A request from the control channel (the launcher's,
    launch/helperclient.py) comes before the grants are made: the app's gate opens on the
    channel's "open"; a request on the command line opens it at once. fds: the files the
    request hands the sandbox (request.files), the user's, open for reading."""
    plan, trusted, features = _checked_plan(request, user, locations)
    name, path, extra = plan.profile.name, plan.profile.path, plan.command
    store = ImageStore(locations.image_dir)
    _log(store, f"uid={user.uid} profile={name} file={path} trusted={trusted} "
                f"grants={','.join(sorted(request.grants))} "
                f"args={extra!r}")
    run_dir = RunDir(locations.run_dir)
    supervisor = Supervisor(run_dir, warn=warn, signals_stop=control is None)
    # The run directory is this user's, and the user's launcher asks for a launch only while
    # it holds its own lock on the profile (else it joins the launch that runs): the root side
    # holding the profile here is that of the user's last launch, whose launcher is gone, still
    # stopping its app (it may not even have written its record yet). Wait for it, rather
    # than refuse.
    with ExitStack() as stack:
        if not supervisor.begin(stack, name, wait=STOPPING_WAIT):
            raise supervisor.run_dir.already_running(name)
        for fd in fds:
            stack.callback(os.close, fd)
        side = ContainerRequest(plan, user, trusted_profile=trusted, features=features,
                                handed=tuple(zip(fds, request.files, strict=True)))
        status = ContainerSide(supervisor, side, sys.stderr, control=control).run(stack)
    _log(store, f"uid={user.uid} profile={name} exit={status}")
    if supervisor.signalled is not None:
        return 128 + supervisor.signalled
    return status


def _read_request(control: ControlChannel) -> tuple[str, tuple[int, ...]] | None:
    """The channel's first message, which must be the request, and the descriptors of the
    files it hands the sandbox; None when the channel ends first (the launcher gave up)."""
    message = control.receive()
    if message is None:
        return None
    if message.word is not Word.REQUEST:
        for fd in message.fds:
            os.close(fd)
        raise refused(f"it came as {message.word.value!r}")
    return message.text, message.fds


def main(argv: Sequence[str] | None = None) -> int:
    if os.geteuid() != 0:
        sys.stderr.write("sandboxapp-privileged: run it through sudo\n")
        return int(ExitStatus.LAUNCHER)
    words = sys.argv[1:] if argv is None else list(argv)
    control = None
    fds: tuple[int, ...] = ()
    try:
        if words == [PENDING]:
            # Started ahead of its request (see launch/helperclient.py): the channel's first
            # message.
            control = ControlChannel.from_fd(0)
            read = _read_request(control)
            if read is None:
                return int(ExitStatus.LAUNCHER)  # the launcher gave up before asking anything
            text, fds = read
        elif len(words) == 1:
            text = words[0]
        else:
            raise refused("give it as the one argument (or \"pending\", and then on the input)")
        try:
            request = HelperRequest.from_json(text)
            if len(request.files) != len(fds) or (
                    fds and request.action not in (Action.LAUNCH, Action.HAND)):
                raise refused(f"it names {len(request.files)} files and comes with "
                              f"{len(fds)} descriptors")
        except SandboxError:
            for fd in fds:
                os.close(fd)
            raise
        # Nothing from the caller's environment counts but the identity sudo vouches for; the
        # store and run directories are the ones `sandboxapp setup` wrote into the wrapper.
        user = DesktopUser.from_environment(os.environ)
        image_dir = os.environ.get("SANDBOXAPP_IMAGE_DIR", str(DEFAULT_IMAGE_DIR))
        run_dir = os.environ.get("SANDBOXAPP_RUN_DIR", str(DEFAULT_RUN_DIR))
        # Each user's launches have a run directory of their own below root's: their own
        # locks and records, so two users' sandboxes of one profile never meet.
        locations = Locations(image_dir=Path(image_dir),
                              run_dir=RunDir(Path(run_dir)).for_user(user.uid).root,
                              config_home=Path("/nonexistent"), data_home=request.data_home)
        if request.action is Action.LAUNCH:
            return launch(request, user, locations, control, fds)
        if request.action is Action.JOIN:
            return join_running(request, user, locations)
        if request.action is Action.HAND:
            return hand_running(request, user, locations, control, fds)
        if request.action is Action.RESET:
            return reset_state(request, user, locations)
        return image_work(request, user, locations)
    except SandboxError as error:
        report(error, sys.stderr)
        return int(error.status)
    except KeyboardInterrupt:
        # The user's Ctrl-C, passed on by sudo, where nothing waits to handle it (a launch
        # handles its own): what was cut short is finished at the next time.
        return 128 + 2


def entry() -> None:
    """The privileged helper's command."""
    finish(main())
