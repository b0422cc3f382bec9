"""What one launch of a profile will do, worked out before anything is changed: the profile,
its image, its layer, the directories it keeps, the display and the command.

`run --dry-run` prints it (features/spec.py), the launcher carries it out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandboxapp.fs.rootfs import check_command
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host.display import Display, parse_display
from sandboxapp.host.wayland import WaylandChoice, WaylandPath, choose_path
from sandboxapp.image.store import Image, ImageStore, not_built
from sandboxapp.paths import Locations, home
from sandboxapp.profile.model import DOWNLOADS_CONTAINER_DIR, Profile, X11Access
from sandboxapp.system.control import MAX_FDS
from sandboxapp.system.handed import FILES_CONTAINER_DIR, handed_name

# Files one command line may hand a sandbox: each goes to the root side as a descriptor beside
# the one request message.
MAX_ARGUMENT_FILES = MAX_FDS


@dataclass(frozen=True)
class HandedFile:
    """A file of the user's named on the command line (a path, or a file:// URL): bound
    read-only into the sandbox, which is given its path there in the argument's place."""

    host: Path
    inside: PurePosixPath


def hand_arguments(args: Sequence[str]) -> tuple[list[str], tuple[HandedFile, ...]]:
    """The session side's: the arguments, with each one that names a regular file (as the
    user sees it) replaced by its path inside, and those files in the order the root side
    binds them. Other URLs, options and words pass as they are."""
    from urllib.parse import quote, unquote, urlsplit

    out: list[str] = []
    handed: list[HandedFile] = []
    for arg in args:
        url = arg.startswith("file:") and urlsplit(arg)
        if url and url.netloc in ("", "localhost"):
            text = unquote(url.path)
        elif not url and not arg.startswith("-"):
            text = arg
        else:
            out.append(arg)
            continue
        host = Path(os.path.abspath(text)) if text else None
        try:
            is_file = host is not None and host.is_file()
        except OSError:  # a word too long to be a path, say
            is_file = False
        if host is None or not is_file or len(handed) >= MAX_ARGUMENT_FILES:
            out.append(arg)
            continue
        inside = FILES_CONTAINER_DIR / str(len(handed) + 1) / handed_name(host.name)
        handed.append(HandedFile(host, inside))
        out.append("file://" + quote(str(inside)) if url else str(inside))
    return out, tuple(handed)


def with_handed_at(plan: LaunchPlan, went: Sequence[PurePosixPath]) -> LaunchPlan:
    """The plan with its command's arguments naming each handed file where it went, in the
    plan's order (a running sandbox numbers what it is handed in its own order)."""
    from urllib.parse import quote

    names = {str(handed.inside): str(new) for handed, new in zip(plan.handed, went, strict=True)}
    names.update({"file://" + quote(old): "file://" + quote(new) for old, new in names.items()})
    return dataclasses.replace(plan, command=tuple(names.get(arg, arg) for arg in plan.command))


@dataclass(frozen=True)
class PersistDir:
    container: PurePosixPath
    host: Path
    # The profile's downloads directory (sandbox.downloads), in the user's download directory
    # rather than below the profile's data directory.
    downloads: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    profile: Profile
    image: Image | None
    layer_root: Path
    # A stateful profile's changes, kept between runs: one directory below it per user.
    state_root: Path | None
    persist: tuple[PersistDir, ...]
    display: Display | None
    # wayland = true in a Wayland session: the way it reaches the compositor; where that is
    # native, the app gets no X display at all.
    wayland: WaylandChoice | None
    command: tuple[str, ...]
    # A desktop user's launch through the helper: "uUID", which keeps its layer and machine
    # apart from another user's of the same profile (and from root's own).
    instance: str | None = None
    # `run --command PROG`: the program run in place of the profile's command.
    program: str | None = None
    # Where this profile's persistent directories are kept, as container paths below it.
    data_root: Path = Path("/nonexistent")
    # The session side's: files named on the command line (hand_arguments).
    handed: tuple[HandedFile, ...] = ()

    @property
    def extra_args(self) -> tuple[str, ...]:
        """The arguments given after the profile's command (or after --command's PROG)."""
        return self.command[1:] if self.program else self.command[len(self.profile.command):]

    @property
    def downloads(self) -> Path | None:
        """The profile's downloads directory on the host (sandbox.downloads)."""
        return next((persist.host for persist in self.persist if persist.downloads), None)

    @property
    def machine(self) -> str:
        # Machine names are host names: no '_'.
        name = "sandboxapp-" + self.profile.name.replace("_", "-")
        return f"{name}-{self.instance}" if self.instance else name


@dataclass(frozen=True)
class Shown:
    """How the app's windows reach the user's desktop: an X display (the user's, or the one
    a nested server of the sandbox's own is shown on), a Wayland connection, or neither."""

    display: Display | None
    wayland: WaylandChoice | None

    @classmethod
    def chosen(cls, display: int | None, wayland: Path | None) -> Shown:
        """The root side's: what the user's launcher chose, as its request names it (root
        never asks the user's compositor itself)."""
        return cls(None if display is None else parse_display(f":{display}"),
                   None if wayland is None else WaylandChoice(
                       wayland, WaylandPath.COMPOSITOR, "the launcher's choice"))


def plan_display(profile: Profile, environ: Mapping[str, str], *, check: bool) -> Shown:
    """The session side's: the compositor is asked (where the profile may be shown on
    Wayland), DISPLAY is read where it is shown through X.

    check: that this desktop can show the profile through X (the nested server is installed;
    a trusted display has the SECURITY extension): before an image is built for the profile,
    a desktop that cannot show it says so before a minute of building."""
    wayland = choose_path(environ) if profile.sandbox.wayland else None
    display = None
    if profile.sandbox.x11 is not X11Access.NONE and not (wayland and wayland.native):
        display = parse_display(environ.get("DISPLAY"))
        if check:
            _check_x_path(profile.sandbox.x11, display, environ)
    return Shown(display, wayland)


def _check_x_path(x11: X11Access, display: Display, environ: Mapping[str, str]) -> None:
    if x11 is X11Access.ISOLATED:
        from sandboxapp.host.nested import check_installed

        check_installed()
    else:
        from sandboxapp.host import xtrust
        from sandboxapp.host.display import XAccess

        xtrust.check_possible(XAccess.from_environment(display, environ))


def plan_launch(
    profile: Profile,
    extra_args: Sequence[str],
    locations: Locations,
    shown: Shown,
    instance: str | None = None,
    program: str | None = None,
    downloads: Path | None = None,
    handed: tuple[HandedFile, ...] = (),
    ready: bool = False,
) -> LaunchPlan:
    """program: run it, with extra_args, in place of the profile's command. downloads: the
    profile's downloads directory on the host (session side: plan_downloads). ready: the
    launch starts now: its image must be built and hold the command."""
    # A persistent container path is kept at the same path below the profile's data directory,
    # so a user finds and backs up files where they expect them.
    data_root = locations.data_home / "sandboxapp" / profile.name
    persist = tuple(PersistDir(path, data_root.joinpath(*path.parts[1:]))
                    for path in profile.sandbox.persist)
    if downloads is not None:
        persist += (PersistDir(DOWNLOADS_CONTAINER_DIR, downloads, downloads=True),)
    places = ImageStore(locations.image_dir).launch_places(profile.name, instance)
    plan = LaunchPlan(
        profile=profile,
        image=places.image,
        layer_root=places.layer_root,
        state_root=None if profile.sandbox.stateless else places.state_root,
        persist=persist,
        display=shown.display,
        wayland=shown.wayland,
        command=(program, *extra_args) if program else (*profile.command, *extra_args),
        instance=instance,
        program=program,
        data_root=data_root,
        handed=handed,
    )
    if ready:
        _ready_image(plan)
    return plan


def _ready_image(plan: LaunchPlan) -> Image:
    """The image the launch starts: built, and holding the command it runs (both sides check
    it before they start anything)."""
    if plan.image is None:
        raise not_built(plan.profile.name)
    check_command(plan.image.rootfs, plan.command[0])
    return plan.image


def plan_downloads(profile: Profile, locations: Locations, user: DesktopUser) -> Path | None:
    """The session side's: the profile's downloads directory, in the user's download
    directory (the XDG user directory DOWNLOAD)."""
    if profile.sandbox.downloads is None:
        return None
    from sandboxapp.fs.userdirs import download_dir

    return download_dir(locations.config_home, home(), user) / profile.sandbox.downloads
