"""`sandboxapp doctor`: is this machine ready, and is anything defeating the isolation?"""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxapp.command import program_exists
from sandboxapp.errors import SandboxError

if TYPE_CHECKING:
    from sandboxapp.host.display import XAccess
from sandboxapp.paths import SANDBOXAPP_GROUP, Locations
from sandboxapp.system.membership import membership_problem

MIN_FREE_BYTES = 2 * 10**9  # an image with Firefox is about 0.7 GB; room for a rebuild beside it
ROOTIDMAP_SINCE = 252


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str | None = None


def _nspawn() -> Check:
    from sandboxapp.system.hostfacts import nspawn_version

    if shutil.which("systemd-nspawn") is None:
        return Check("systemd-nspawn", Status.FAIL, "not installed",
                     "apt-get install systemd-container")
    version = nspawn_version()
    if version < ROOTIDMAP_SINCE:
        return Check("systemd-nspawn", Status.FAIL,
                     f"systemd {version}: persistent directories need rootidmap binds "
                     f"(systemd {ROOTIDMAP_SINCE} or newer)", "upgrade systemd-container")
    return Check("systemd-nspawn", Status.OK, f"systemd {version}, rootidmap binds supported")


def _debootstrap() -> Check:
    from sandboxapp.image.debian import KEYRING

    if shutil.which("debootstrap") is None:
        return Check("debootstrap", Status.FAIL, "not installed", "apt-get install debootstrap")
    if not KEYRING.is_file():
        return Check("debootstrap", Status.FAIL, f"{KEYRING} is missing: signatures cannot be "
                     "checked", "apt-get install debian-archive-keyring")
    return Check("debootstrap", Status.OK, f"installed, archive keyring {KEYRING}")


def _user_namespaces() -> Check:
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return Check("user namespaces", Status.FAIL, "the kernel does not offer them")
    if limit == 0:
        return Check("user namespaces", Status.FAIL, "disabled (user.max_user_namespaces = 0)",
                     "sysctl -w user.max_user_namespaces=15000")
    return Check("user namespaces", Status.OK, f"available (up to {limit})")


def _overlayfs() -> Check:
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" in filesystems.split():
        return Check("overlayfs", Status.OK, "available")
    if Path(f"/lib/modules/{os.uname().release}").is_dir():
        return Check("overlayfs", Status.WARN, "not loaded yet; the kernel loads it on first use")
    return Check("overlayfs", Status.FAIL, "not available", "modprobe overlay")


def _display(environ: Mapping[str, str]) -> list[Check]:
    from sandboxapp.host import x11
    from sandboxapp.host.display import XAccess, parse_display

    try:
        display = parse_display(environ.get("DISPLAY"))
        access = XAccess.from_environment(display, environ)
        everyone = x11.cookieless_admission(access)
    except SandboxError as exc:
        return [Check("X display", Status.FAIL, exc.message, exc.hint)]
    checks = [Check("X display", Status.OK, f"{display.name} reachable")]
    if everyone is not None:
        checks.append(Check(
            "X access control", Status.FAIL,
            f"the X server admits every local program without a cookie ({everyone}): "
            'sandboxes with network = "host" are refused, since they would reach your '
            "display through its abstract socket", "xhost -local: ; xhost -"))
    else:
        checks.append(Check("X access control", Status.OK,
                            "only clients with your cookie get in"))
    checks.append(_nested_display(access))
    return checks


def _nested_display(access: XAccess) -> Check:
    from sandboxapp.host import xtrust

    missing = [program for program in ("Xephyr", "xkbcomp") if not program_exists(program)]
    if missing:
        return Check("X isolation", Status.FAIL,
                     f"missing {', '.join(missing)}: x11 = true sandboxes cannot get an X "
                     "server of their own", "apt-get install xserver-xephyr x11-xkb-utils")
    try:
        xtrust.check_possible(access)
        trusted = (f'profiles with x11 = "trusted" get an authorization of their own on '
                   f"{access.display.name} itself")
    except SandboxError:
        trusted = (f'{access.display.name} has no SECURITY extension (Xwayland), so profiles '
                   'with x11 = "trusted" are refused')
    return Check("X isolation", Status.OK,
                 "x11 = true sandboxes get an X server of their own (Xephyr) in a window on "
                 f"{access.display.name}; {trusted}")


def _wayland(environ: Mapping[str, str]) -> Check:
    """The way profiles with wayland = true reach this session, and why."""
    from sandboxapp.host.wayland import choose_path

    try:
        choice = choose_path(environ)
    except SandboxError as exc:
        return Check("Wayland", Status.FAIL, exc.message, exc.hint)
    if choice is None:
        return Check("Wayland", Status.OK, "not a Wayland session: wayland = true profiles "
                                           "show their windows through X")
    if choice.native:
        return Check("Wayland", Status.OK, f"wayland = true profiles draw on the compositor "
                                           f"itself ({choice.socket}): {choice.why}")
    return Check("Wayland", Status.WARN if choice.unanswered else Status.OK,
                 f"wayland = true profiles show their windows through X, as x11 = true does: "
                 f"{choice.why}")


def _sound(environ: Mapping[str, str]) -> Check:
    from sandboxapp.host.sound import SoundServerAddress, server_reachable

    address = SoundServerAddress.from_environment(environ)
    if address is None or not server_reachable(address):
        return Check("sound server", Status.FAIL, "no PulseAudio or PipeWire server found",
                     "start your session's sound server, or set PULSE_SERVER")
    try:
        import pulsectl  # libpulse, as any client of the user's server
    except (ImportError, OSError) as exc:
        return Check("sound server", Status.FAIL, f"cannot load libpulse: {exc}",
                     "apt-get install libpulse0")
    try:
        # A client of the user's server, as the sound proxy is for each sandbox connection.
        with pulsectl.Pulse("sandboxapp doctor", server=address.server,
                            connect=True) as pulse:
            info = pulse.server_info()
    except pulsectl.PulseError as exc:
        return Check("sound server", Status.FAIL, f"{address.socket} refused sandboxapp: {exc}",
                     "check PULSE_SERVER and your sound server's cookie")
    return Check("sound server", Status.OK,
                 f"{address.socket} ({info.server_name} {info.server_version}): sandboxes get "
                 "a socket of their own, served through a filter (playback; recording only "
                 "with microphone = true)")


def _privileges() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", Status.OK, "running as root")
    problem = membership_problem(os.environ.get("USER") or "$USER")
    if problem is not None:
        return Check("privileges", Status.FAIL, *problem)
    return Check("privileges", Status.OK, f"member of {SANDBOXAPP_GROUP}; helper installed")


def _disk(image_dir: Path) -> Check:
    existing = image_dir
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    text = f"{free / 10**9:.1f} GB free for images in {image_dir}"
    if free < MIN_FREE_BYTES:
        return Check("disk space", Status.FAIL, text, "free some space, or set "
                     "SANDBOXAPP_IMAGE_DIR to a larger file system")
    return Check("disk space", Status.OK, text)


def run_checks(locations: Locations, environ: Mapping[str, str]) -> list[Check]:
    checks: list[Check] = []
    steps: list[Callable[[], Check | list[Check]]] = [
        _nspawn, _debootstrap, _user_namespaces, _overlayfs,
        lambda: _display(environ), lambda: _wayland(environ), lambda: _sound(environ),
        _privileges,
        lambda: _disk(locations.image_dir),
    ]
    for step in steps:
        result = step()
        checks.extend(result if isinstance(result, list) else [result])
    return checks
