"""`sandboxapp image ...` and `sandboxapp shell`: building, updating, listing, removing images."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sandboxapp.cli.progress import TerminalProgress
from sandboxapp.cli.run import resolve_profile
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.output import human_size, say, table
from sandboxapp.paths import Locations
from sandboxapp.profile.find import find_profile

if TYPE_CHECKING:
    from sandboxapp.image.store import Image

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def cmd_image_build(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.build import build_image
    from sandboxapp.image.store import ImageStore

    profile = resolve_profile(args.profile, locations)
    store = ImageStore(locations.image_dir)
    progress = TerminalProgress(sys.stderr)
    try:
        image = build_image(profile, store, progress, force=args.force)
    finally:
        progress.done.set()
    if image is None:
        existing = store.require(profile.name)
        say(f"the image for {profile.name!r} is already built ({existing.meta.built_at}); "
             "--force rebuilds it")
        return ExitStatus.OK
    progress.finish(
        f"built {image.name}: {human_size(image.meta.size_bytes)}, UIDs {image.meta.uid_range},"
        f" in {image.path}"
    )
    return ExitStatus.OK


def _image_state(name: str, image: Image, locations: Locations) -> str:
    from sandboxapp.image.store import image_is_stale

    try:
        profile = find_profile(name, locations)
    except SandboxError:
        return "no profile"
    return "stale" if image_is_stale(profile, image) else "current"


def cmd_image_list(args: argparse.Namespace, locations: Locations) -> int:
    from datetime import UTC, datetime

    from sandboxapp.image.store import ImageStore

    images = ImageStore(locations.image_dir).images()
    if not images:
        say(f"no images in {locations.image_dir}")
        return ExitStatus.OK
    rows = [["PROFILE", "SUITE", "SIZE", "BUILT", "UPDATED", "AGE", "STATE", "UID RANGE"]]
    for image in images:
        meta = image.meta
        updated = (datetime.fromisoformat(meta.updated_at).strftime("%Y-%m-%d %H:%M")
                   if meta.updated_at else "-")
        age = datetime.now(UTC) - meta.refreshed_at
        rows.append([meta.profile, meta.suite, human_size(meta.size_bytes),
                     image.built_at.strftime("%Y-%m-%d %H:%M"), updated, f"{age.days} d",
                     _image_state(meta.profile, image, locations), str(meta.uid_range)])
    say(table(rows))
    return ExitStatus.OK


def cmd_image_update(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.rework import update_image
    from sandboxapp.image.store import ImageStore

    store = ImageStore(locations.image_dir)
    if args.all:
        names = [image.name for image in store.images()]
    elif args.profile:
        names = [args.profile]
    else:
        raise SandboxError("name a profile, or give --all", status=ExitStatus.USAGE)
    for name in names:
        profile = resolve_profile(name, locations)
        progress = TerminalProgress(sys.stderr)
        try:
            image, changes = update_image(profile, store, progress)
        finally:
            progress.done.set()
        progress.finish(f"updated {image.name}: {len(changes)} package(s) changed")
        for change in changes:
            say(f"{image.name}: {change.name} {change.old or '(new)'} -> "
                 f"{change.new or '(removed)'}")
    return ExitStatus.OK


def cmd_shell(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.rework import shell_in_image
    from sandboxapp.image.store import ImageStore

    profile = resolve_profile(args.profile, locations)
    progress = TerminalProgress(sys.stderr)
    try:
        status, kept = shell_in_image(profile, ImageStore(locations.image_dir), progress,
                                      discard=args.discard)
    finally:
        progress.done.set()
    progress.finish(f"changes to {profile.name}'s image " + ("kept" if kept else "discarded"))
    return status


def cmd_image_remove(args: argparse.Namespace, locations: Locations) -> int:
    from sandboxapp.image.store import ImageStore

    store = ImageStore(locations.image_dir)
    path = store.remove(args.profile)
    say(f"removed {path}")
    kept = store.state_root(args.profile)
    if kept.exists():
        say(f"kept {kept}: the changes {args.profile} keeps for its users, which its next image "
            f"starts with too; each user drops theirs with: sandboxapp reset {args.profile}")
    return ExitStatus.OK


def add_shell(commands: Subparsers) -> None:
    p = commands.add_parser("shell", help="a root shell in a profile's pristine image; "
                            "changes land when it exits with 0 (as root)")
    p.add_argument("--discard", action="store_true", help="throw the changes away")
    p.add_argument("profile", metavar="PROFILE")
    p.set_defaults(func=cmd_shell)


def add_image(commands: Subparsers) -> None:
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

