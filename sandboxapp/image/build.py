"""Building a pristine image: debootstrap, security updates, packages, ownership shift, commit.

Everything happens in a `.build-*` directory beside the images; only a complete image is moved
into place, by one atomic rename (or an atomic exchange with the image it replaces). A build that
dies halfway leaves the previous image untouched; the next build removes what it left.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from sandboxapp.command import program_exists, run
from sandboxapp.errors import SandboxError
from sandboxapp.fs.util import exchange, fsync_dir, remove_tree, tree_size
from sandboxapp.image.debian import KEYRING, mirror_from_sources, security_mirror, sources_list
from sandboxapp.image.store import (
    BUILD_MARKER,
    META_FILE,
    Image,
    ImageMeta,
    ImageStore,
    image_is_stale,
    spec_digest,
)
from sandboxapp.profile.model import Profile
from sandboxapp.system.hostfacts import host_facts
from sandboxapp.system.nspawn import maintenance_argv, shift_ownership_argv
from sandboxapp.system.procstat import is_alive
from sandboxapp.system.uidrange import UidRange, allocate
from sandboxapp.undo.ledger import process_identity

REQUIRED_PROGRAMS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "unshare": "util-linux",
    "setpriv": "util-linux",
}
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
APT_GET = ["apt-get", "-q", "-y", "-o", "Dpkg::Use-Pty=0"]
# Keeps package scripts from starting services in the image while it is built.
POLICY_RC_D = "usr/sbin/policy-rc.d"


class Progress(Protocol):
    def stage(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


def check_build_tools() -> None:
    missing = [f"{prog} (package {pkg})" for prog, pkg in REQUIRED_PROGRAMS.items()
               if not program_exists(prog)]
    if missing:
        raise SandboxError(
            f"cannot build images: missing {', '.join(missing)}",
            hint="apt-get install debootstrap systemd-container debian-archive-keyring",
        )
    if not KEYRING.is_file():
        raise SandboxError(
            f"cannot check the archive's signatures: {KEYRING} is missing",
            hint="apt-get install debian-archive-keyring",
        )
    if os.geteuid() != 0:
        raise SandboxError("building an image needs root", hint="run it with sudo")


def _builder_alive(marker: dict[str, object]) -> bool:
    return is_alive(marker.get("pid"), marker.get("started"))


def clean_debris(store: ImageStore, progress: Progress) -> None:
    """Remove what killed builds and removals left behind, and only that."""
    for path, marker in store.building():
        if marker and _builder_alive(marker):
            continue
        which = BUILD_MARKER if (path / BUILD_MARKER).exists() else META_FILE
        if not (path / which).exists():
            # Created but not yet marked, or a deletion that got to its very end.
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            continue
        if which == META_FILE and store.layers_using(path / "rootfs"):
            continue  # an image replaced by an update, still serving a running sandbox
        progress.warn(f"removing {path.name}, left by a build that did not finish")
        remove_tree(path, marker=which)
    for path in sorted(store.root.glob(".old-*")):
        if (path / META_FILE).exists():
            if not store.layers_using(path / "rootfs"):
                remove_tree(path, marker=META_FILE)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _taken_bases(store: ImageStore, name: str) -> set[int]:
    taken = {image.meta.uid_base for image in store.images() if image.name != name}
    for _, marker in store.building():
        base = marker.get("uid_base")
        if marker.get("profile") != name and isinstance(base, int) and _builder_alive(marker):
            taken.add(base)
    return taken


class Build:
    def __init__(self, profile: Profile, staging: Path, ids: UidRange, log: IO[str],
                 progress: Progress) -> None:
        self.profile = profile
        self.staging = staging
        self.rootfs = staging / "rootfs"
        self.ids = ids
        self.log = log
        self.progress = progress
        self.facts = host_facts()
        # Whether the tree is already in its UID block (an update) or still root's (a build).
        self.shifted = False

    def step(self, argv: Sequence[str], what: str) -> None:
        # setpriv: if sandboxapp is killed, the command dies with it instead of writing on
        # into a directory the next build will delete.
        try:
            run(["setpriv", "--pdeathsig", "KILL", "--", *argv], log=self.log, what=what)
        except SandboxError as exc:
            exc.message = exc.message.replace("setpriv --pdeathsig KILL -- ", "")
            raise

    def in_image(self, command: Sequence[str], what: str) -> None:
        self.step(maintenance_argv(self.rootfs, command, self.facts, env=APT_ENV,
                                   ids=self.ids if self.shifted else None), what)

    def debootstrap(self) -> tuple[str, str | None]:
        spec = self.profile.image
        self.progress.stage(f"debootstrap {spec.suite} (minbase)")
        argv = [
            # A private PID and mount namespace: the /proc and /sys that debootstrap mounts in
            # the tree, and every process it starts, vanish with it however it ends.
            "unshare", "--fork", "--pid", "--mount", "--propagation", "private", "--kill-child",
            "debootstrap", "--variant=minbase", f"--keyring={KEYRING}", "--force-check-gpg",
            "--components=main", spec.suite, str(self.rootfs),
        ]
        if spec.mirror:
            argv.append(spec.mirror)
        self.step(argv, "debootstrap")
        mirror = spec.mirror or mirror_from_sources(
            (self.rootfs / "etc/apt/sources.list").read_text(encoding="utf-8")
        )
        if mirror is None:
            raise SandboxError("debootstrap wrote no archive into etc/apt/sources.list",
                               hint=f"see the log: {self.log.name}")
        return mirror, security_mirror(mirror)

    def configure_apt(self, mirror: str, security: str | None) -> None:
        suite = self.profile.image.suite
        if security is None and suite not in ("sid", "unstable", "experimental"):
            self.progress.warn(
                f"no security archive is known for {mirror}: the image gets no security updates"
            )
        (self.rootfs / "etc/apt/sources.list").write_text(sources_list(suite, mirror, security))
        self.configure_repositories()
        self.write_policy()

    def write_policy(self) -> None:
        policy = self.rootfs / POLICY_RC_D
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        if self.shifted:
            os.chown(policy, self.ids.base, self.ids.base)

    def configure_repositories(self) -> None:
        """The profile's extra repositories, each checked against its own key only."""
        keyrings = self.rootfs / "etc/apt/keyrings"
        for index, repo in enumerate(self.profile.image.repositories):
            try:
                key = Path(repo.key).read_bytes()
            except OSError as exc:
                raise SandboxError(f"cannot read the key {repo.key} of image.repositories"
                                   f"[{index}]: {exc.strerror}") from None
            suffix = ".asc" if key.lstrip().startswith(b"-----BEGIN PGP") else ".gpg"
            keyrings.mkdir(mode=0o755, parents=True, exist_ok=True)
            keyring = keyrings / f"sandboxapp-{index}{suffix}"
            keyring.write_bytes(key)
            keyring.chmod(0o644)
            line = (f"deb [signed-by=/etc/apt/keyrings/{keyring.name}] {repo.uri} {repo.suite}"
                    + "".join(f" {c}" for c in repo.components))
            (self.rootfs / f"etc/apt/sources.list.d/sandboxapp-{index}.list").write_text(
                line + "\n")

    def install(self) -> None:
        self.upgrade()
        packages = self.profile.image.packages
        if packages:
            self.progress.stage(f"installing {' '.join(packages)}")
            self.in_image([*APT_GET, "install", "--no-install-recommends", "--", *packages],
                          "apt-get install")
        self.clean()

    def upgrade(self) -> None:
        self.progress.stage("updating from the archive and its security repository")
        self.in_image([*APT_GET, "update"], "apt-get update")
        self.in_image([*APT_GET, "dist-upgrade"], "apt-get dist-upgrade")

    def clean(self) -> None:
        self.progress.stage("cleaning apt's caches")
        self.in_image([*APT_GET, "clean"], "apt-get clean")
        (self.rootfs / POLICY_RC_D).unlink(missing_ok=True)
        lists = self.rootfs / "var/lib/apt/lists"
        for entry in lists.iterdir():
            if entry.is_file() and entry.name != "lock":
                entry.unlink()

    def shift_ownership(self) -> None:
        self.progress.stage(f"shifting ownership to host UIDs {self.ids}")
        self.step(shift_ownership_argv(self.rootfs, self.ids, self.facts), "ownership shift")
        if self.rootfs.stat().st_uid != self.ids.base:
            raise SandboxError(f"the ownership shift of {self.rootfs} did not take effect")

    def metadata(self, mirror: str, security: str | None) -> ImageMeta:
        spec = self.profile.image
        return ImageMeta(
            profile=self.profile.name,
            uid_base=self.ids.base,
            uid_count=self.ids.count,
            suite=spec.suite,
            packages=spec.packages,
            mirror=mirror,
            security=security,
            spec_digest=spec_digest(spec),
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            size_bytes=tree_size(self.rootfs),
        )


def commit_staged(
    profile: Profile,
    store: ImageStore,
    progress: Progress,
    existing: Image | None,
    what: str,
    produce: Callable[[Build], ImageMeta | None],
) -> Image | None:
    """Make an image in a staging directory with `produce` and move it into place atomically;
    None when produce decides to keep nothing. The caller holds the image's lock.

    The image keeps the UID block of the one it replaces; a new image gets a free block,
    chosen under the lock that writes the build marker that claims it (a build of another
    profile that starts meanwhile sees it taken).

    The image it replaces is deleted at once, unless a running sandbox still has it as its
    lower layer: then it is kept aside until a later build finds it unused."""
    name = profile.name
    with store.lock("allocation"):
        if existing is not None:
            ids = existing.meta.uid_range
        else:
            taken = _taken_bases(store, name)
            ids = allocate(name, taken)
        staging = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=store.root))
        staging.chmod(0o700)
        pid, started = process_identity()
        marker = {"pid": pid, "started": started, "profile": name, "uid_base": ids.base}
        (staging / BUILD_MARKER).write_text(json.dumps(marker))
    try:
        with store.log_path(name).open("w", encoding="utf-8") as log:
            log.write(f"# sandboxapp image {what} {shlex.quote(name)} from {profile.path}\n")
            meta = produce(Build(profile, staging, ids, log, progress))
            if meta is None:
                remove_tree(staging, marker=BUILD_MARKER)
                return None
            progress.stage("committing the image")
            (staging / META_FILE).write_text(meta.to_json(), encoding="utf-8")
            staging.chmod(0o755)
            fsync_dir(staging)
            target = store.image_path(name)
            if existing is not None:
                exchange(staging, target)  # staging now holds the old image
            else:
                os.rename(staging, target)
            fsync_dir(store.root)
            (target / BUILD_MARKER).unlink()
    except BaseException as exc:
        if isinstance(exc, SandboxError):
            exc.hint = exc.hint or f"the full log is in {store.log_path(name)}"
        if staging.exists() and (staging / BUILD_MARKER).exists():
            remove_tree(staging, marker=BUILD_MARKER)
        raise
    if existing is not None:
        if store.layers_using(staging / "rootfs"):
            os.rename(staging, store.root / f".old-{name}-{os.getpid()}")
        else:
            remove_tree(staging, marker=META_FILE)
    return Image(target, meta)


def build_image(
    profile: Profile, store: ImageStore, progress: Progress, *, force: bool = False
) -> Image | None:
    """Build the profile's image; None when it is built, up to date with the profile, and
    force is not set."""
    check_build_tools()
    store.ensure()
    name = profile.name
    with store.lock(f"image-{name}", wait=False):
        clean_debris(store, progress)
        existing = store.get(name)
        if existing is not None and not force and not image_is_stale(profile, existing):
            return None

        def produce(build: Build) -> ImageMeta:
            mirror, security = build.debootstrap()
            build.configure_apt(mirror, security)
            build.install()
            build.shift_ownership()
            return build.metadata(mirror, security)

        return commit_staged(profile, store, progress, existing, "build", produce)
