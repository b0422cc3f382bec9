"""The image store: pristine images, one directory per profile, and their metadata.

    $SANDBOXAPP_IMAGE_DIR/
      PROFILE/                  a committed image (only ever appears by an atomic rename)
        image.json              metadata; its presence is what makes the directory an image
        rootfs/                 the tree, owned by the image's own UID block
      .build-PROFILE-XXXX/      a build in progress (build.json names the builder)
      .old-PROFILE-XXXX/        an image replaced by a rebuild, deleted right after
      .logs/build-PROFILE.log   the full log of the last build
      .locks/                   lock files
      .state/PROFILE/UID/       a stateful profile's changes, kept for one user (root's, 0700)
      .layers/PROFILE[@INST]/   a running launch's writable layer (system/layer.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sandboxapp import __version__
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.util import (
    delete_trees,
    mount_points,
    mounts_under,
    overlays_writing_to,
    remove_tree,
)
from sandboxapp.profile.model import ImageSpec, Profile, check_profile_name
from sandboxapp.system.uidrange import UidRange

META_FILE = "image.json"
BUILD_MARKER = "build.json"
META_VERSION = 1


def spec_digest(spec: ImageSpec) -> str:
    """A digest of what the image is built from, to tell when a profile has moved on."""
    # Every launch checks it: CPython's own SHA-256 gives the same digest as hashlib's without
    # loading OpenSSL (3 to 5 ms before the container could start).
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # an interpreter without it
        from hashlib import sha256

    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return str(sha256(text.encode()).hexdigest()[:16])


def image_is_stale(profile: Profile, image: Image) -> bool:
    """The profile's [image] section no longer matches what the image was built from."""
    return image.meta.spec_digest != spec_digest(profile.image)


def not_built(name: str) -> SandboxError:
    return SandboxError(f"the image for {name!r} is not built",
                        hint=f"build it with: sandboxapp image build {name}",
                        status=ExitStatus.LAUNCHER)


@dataclass(frozen=True)
class ImageMeta:
    profile: str
    uid_base: int
    uid_count: int
    suite: str
    packages: tuple[str, ...]
    mirror: str
    security: str | None
    spec_digest: str
    built_at: str  # ISO 8601, UTC
    size_bytes: int
    sandboxapp_version: str = __version__
    meta_version: int = META_VERSION
    updated_at: str | None = None  # the last `image update`, or None

    @property
    def refreshed_at(self) -> datetime:
        """When the image last got its packages from the archive."""
        return datetime.fromisoformat(self.updated_at or self.built_at)

    @property
    def uid_range(self) -> UidRange:
        return UidRange(self.uid_base, self.uid_count)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageMeta:
        data = json.loads(text)
        data["packages"] = tuple(data["packages"])
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True)
class Image:
    path: Path
    meta: ImageMeta

    @property
    def name(self) -> str:
        return self.meta.profile

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def built_at(self) -> datetime:
        return datetime.fromisoformat(self.meta.built_at)


@dataclass(frozen=True)
class LaunchPlaces:
    """Where a launch of a profile finds its image, makes its layer and keeps its changes."""

    image: Image | None
    layer_root: Path
    # A stateful profile's changes: one directory below it per user.
    state_root: Path


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def log_dir(self) -> Path:
        return self.root / ".logs"

    def image_path(self, name: str) -> Path:
        return self.root / check_profile_name(name)

    def state_root(self, name: str) -> Path:
        """Where a stateful profile's changes are kept, a directory per user below."""
        return self.root / ".state" / check_profile_name(name)

    def launch_places(self, name: str, instance: str | None) -> LaunchPlaces:
        """instance: a desktop user's launch through the helper has its own layer."""
        image = self.get(name)
        # '@' is in no profile name: an instance's layer is never another profile's.
        layer = f"{name}@{instance}" if instance else name
        return LaunchPlaces(image, self.root / ".layers" / layer, self.root / ".state" / name)

    def remove_state(self, name: str, uid: int) -> Path | None:
        """Drop the changes a stateful profile kept for one user; the directory it took them
        from, or None where there were none. The caller holds the profile's launch lock for
        that user (no launch uses them)."""
        path = self.state_root(name) / str(uid)

        def made_here(directory: Path) -> bool:
            # Every directory on the way is root's, made by a launch (system/layer.py): a path
            # that is anything else was not made by sandboxapp, and nothing below is deleted.
            try:
                st = directory.lstat()
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                raise SandboxError(f"refusing to delete {path}: {directory} is not a directory "
                                   "of sandboxapp's", status=ExitStatus.FAILURE)
            return True

        if not (made_here(self.root / ".state") and made_here(self.state_root(name))):
            return None
        # What an earlier reset for this user left, cut short (see below), goes first.
        delete_trees([old for old in path.parent.glob(f".old-{uid}-*")
                      if made_here(old)])
        if not made_here(path):
            return None
        if mounts_under(path):
            raise SandboxError(f"refusing to delete {path}: something is mounted below it",
                               status=ExitStatus.FAILURE)
        # A launch of the profile for this user under another lock than the caller's (root's
        # `sudo sandboxapp run` for them, beside their own helper's), or one killed whose
        # layer is still mounted, writes there.
        if overlays_writing_to(path / "upper"):
            raise SandboxError(f"{name} is running for this user: the changes it keeps cannot "
                               "go now", hint=f"stop it first (sandboxapp stop {name}); after "
                               "a crash: sandboxapp cleanup", status=ExitStatus.USAGE)
        # Renamed out of the way first: the next launch never takes a half-deleted tree for
        # the kept changes.
        trash = path.parent / f".old-{uid}-{os.getpid()}"
        os.rename(path, trash)
        delete_trees([trash])
        return path

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"build-{name}.log"

    def ensure(self) -> None:
        for directory in (self.root, self.log_dir, self.root / ".locks"):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, what: str, *, wait: bool = True) -> Iterator[None]:
        """An exclusive lock on part of the store (released when the process dies)."""
        self.ensure()
        fd = os.open(self.root / ".locks" / f"{what}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise SandboxError(
                    f"{what} is busy: another sandboxapp is working on it",
                    hint="wait for it to finish and try again",
                ) from None
            yield
        finally:
            os.close(fd)

    def get(self, name: str) -> Image | None:
        path = self.image_path(name)
        try:
            text = (path / META_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SandboxError(f"cannot read the image metadata {path / META_FILE}: {exc}") from exc
        try:
            return Image(path, ImageMeta.from_json(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise SandboxError(
                f"the image metadata {path / META_FILE} is damaged ({exc})",
                hint=f"rebuild the image: sandboxapp image build --force {name}",
            ) from None

    def require(self, name: str) -> Image:
        image = self.get(name)
        if image is None:
            raise not_built(name)
        return image

    def images(self) -> list[Image]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / META_FILE).is_file():
                continue
            image = self.get(entry.name)
            if image is not None:
                found.append(image)
        return found

    def building(self) -> list[tuple[Path, dict[str, object]]]:
        """Build directories and what their markers say."""
        found: list[tuple[Path, dict[str, object]]] = []
        if not self.root.is_dir():
            return found
        for entry in sorted(self.root.glob(".build-*")):
            try:
                found.append((entry, json.loads((entry / BUILD_MARKER).read_text())))
            except (OSError, ValueError):
                found.append((entry, {}))
        return found

    def layers_using(self, rootfs: Path) -> list[Path]:
        """Mounted writable layers whose lower tree is this rootfs (the same inode, whatever
        its path is now: an image replaced by an update keeps serving running sandboxes)."""
        try:
            st = rootfs.stat()
        except FileNotFoundError:
            return []
        mounted = set(mount_points())
        users = []
        for marker in sorted((self.root / ".layers").glob("*/layer.json")):
            try:
                data = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if data.get("rootfs_id") == [st.st_dev, st.st_ino] and (
                marker.parent / "merged" in mounted
            ):
                users.append(marker.parent)
        return users

    def remove(self, name: str) -> Path:
        path = self.image_path(name)
        if self.get(name) is None:
            raise SandboxError(
                f"there is no image for {name!r} in {self.root}",
                hint="'sandboxapp image list' shows the images there are",
                status=ExitStatus.USAGE,
            )
        with self.lock(f"image-{name}", wait=False):
            if self.layers_using(path / "rootfs"):
                raise SandboxError(f"{name} is running: its image cannot go now",
                                   hint=f"stop it first: sandboxapp stop {name}",
                                   status=ExitStatus.USAGE)
            # Renamed out of the way first, so that a half-deleted tree is never taken for
            # an image; the marker check happens before any deletion.
            trash = self.root / f".old-{name}-{os.getpid()}"
            os.rename(path, trash)
            remove_tree(trash, marker=META_FILE)
        return path
