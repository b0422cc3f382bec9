"""Work on a copy of a built image, swapped in when it is done: `image update` (apt, with the
packages that changed) and `shell` (a root shell whose changes are kept on exit 0)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sandboxapp.command import base_env, run_attached
from sandboxapp.fs.util import tree_size
from sandboxapp.image.build import Build, Progress, check_build_tools, clean_debris, commit_staged
from sandboxapp.image.store import Image, ImageMeta, ImageStore
from sandboxapp.profile.model import Profile
from sandboxapp.system.nspawn import maintenance_argv


@dataclass(frozen=True)
class PackageChange:
    name: str
    old: str | None  # None: newly installed
    new: str | None  # None: removed


def installed_versions(rootfs: Path) -> dict[str, str]:
    """Package versions from the image's dpkg database, read from the host."""
    versions: dict[str, str] = {}
    text = (rootfs / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            arch = fields.get("Architecture", "")
            key = fields["Package"] if arch in ("all", "", _host_arch()) else \
                f"{fields['Package']}:{arch}"
            versions[key] = fields.get("Version", "")
    return versions


def _host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _copy_existing(build: Build, existing: Image) -> None:
    build.progress.stage("copying the image (the current one stays as it is)")
    build.step(["cp", "-a", "--reflink=auto", "--", str(existing.rootfs), str(build.rootfs)],
               "copying the image")
    build.shifted = True


def _rework_existing(
    profile: Profile, store: ImageStore, progress: Progress, what: str,
    produce: Callable[[Build, Image], ImageMeta | None],
) -> Image | None:
    """Work on a copy of the profile's built image and swap it in (see build.commit_staged)."""
    store.ensure()
    with store.lock(f"image-{profile.name}", wait=False):
        existing = store.require(profile.name)  # "not built" says more than a missing tool
        check_build_tools()
        clean_debris(store, progress)
        return commit_staged(profile, store, progress, existing, what,
                              lambda build: produce(build, existing))


def update_image(profile: Profile, store: ImageStore,
                 progress: Progress) -> tuple[Image, tuple[PackageChange, ...]]:
    """apt update and dist-upgrade beside the pristine image, then an atomic swap; sandboxes
    already running keep the image they started on until they exit."""
    changes: list[PackageChange] = []

    def produce(build: Build, existing: Image) -> ImageMeta:
        _copy_existing(build, existing)
        before = installed_versions(build.rootfs)
        build.write_policy()
        build.upgrade()
        build.clean()
        after = installed_versions(build.rootfs)
        changes.extend(
            PackageChange(pkg, before.get(pkg), after.get(pkg))
            for pkg in sorted(set(before) | set(after)) if before.get(pkg) != after.get(pkg)
        )
        return dataclasses.replace(
            existing.meta, updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            size_bytes=tree_size(build.rootfs))

    image = _rework_existing(profile, store, progress, "update", produce)
    assert image is not None
    return image, tuple(changes)


def shell_in_image(profile: Profile, store: ImageStore, progress: Progress,
                   *, discard: bool) -> tuple[int, bool]:
    """An interactive root shell in a copy of the pristine image, in its UID block; the copy
    replaces the image when the shell exits with 0 (and discard is not set). (status, kept)"""
    result: list[int] = []

    def produce(build: Build, existing: Image) -> ImageMeta | None:
        _copy_existing(build, existing)
        progress.stage(f"shell in {profile.name}'s image: exit 0 keeps the changes"
                       + (" (--discard: nothing is kept)" if discard else ""))
        argv = maintenance_argv(build.rootfs, ["/bin/bash", "-l"], build.facts, ids=build.ids)
        # A terminal gets an interactive shell; a script piped in is read as it comes.
        argv.insert(1, "--console=autopipe")
        status = run_attached(argv, env=base_env({"TERM": os.environ.get("TERM", "dumb")}))
        result.append(status)
        if discard or status != 0:
            return None
        return dataclasses.replace(existing.meta, size_bytes=tree_size(build.rootfs))

    image = _rework_existing(profile, store, progress, "shell", produce)
    return result[0] if result else 1, image is not None
