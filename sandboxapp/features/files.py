"""The host files a sandbox sees: its persistent directories (its downloads directory among
them) and the profile's read-only binds."""

from __future__ import annotations

import os
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.fs.safepath import ensure_user_dir, move_user_entries
from sandboxapp.system.nspawn import Bind

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan, PersistDir
    from sandboxapp.profile.model import ReadOnlyBind


@dataclass(frozen=True)
class PersistentDirs(Feature):
    """Directories kept between runs, the user's own on the host, the container root's inside."""

    dirs: tuple[PersistDir, ...]

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> PersistentDirs:
        plan = session.plan
        for persist in plan.persist:
            ensure_user_dir(persist.host, session.user)
            if persist.downloads:
                _move_kept_downloads(plan.data_root.joinpath(*persist.container.parts[1:]),
                                     persist.host, session)
        return cls(plan.persist)

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> PersistentDirs:
        return cls(plan.persist)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        return [CheckedPath(p.host, False, "persistent directory", stat.S_IFDIR)
                for p in self.dirs]

    def binds(self, source: Source) -> list[Bind]:
        return [Bind(source(p.host), str(p.container), read_only=False, root_idmap=True)
                for p in self.dirs]

    def describe(self) -> list[str]:
        return [f"download: {p.container} is {p.host} (owned by you), and nothing else of "
                f"{p.host.parent}" if p.downloads else
                f"persist:  {p.container} kept in {p.host} (owned by you)" for p in self.dirs]


def _move_kept_downloads(old: Path, new: Path, session: Session) -> None:
    """What launches kept in the profile's data directory before it had a downloads
    directory of its own goes there, once (the old directory is gone afterwards)."""
    left = move_user_entries(old, new, session.user)
    if left:
        session.warn(f"{len(left)} of the downloads kept in {old} could not be moved to {new}; "
                     "they stay where they are")


@dataclass(frozen=True)
class ReadOnlyBinds(Feature):
    """The profile's sandbox.bind_ro: host paths the sandbox may read."""

    binds_ro: tuple[ReadOnlyBind, ...]

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> ReadOnlyBinds:
        profile = session.plan.profile
        for bind in profile.sandbox.bind_ro:
            if not os.path.exists(bind.host):
                raise SandboxError(
                    f"{profile.path}: sandbox.bind_ro: {bind.host} does not exist",
                    hint="create it, or remove it from the profile",
                    status=ExitStatus.LAUNCHER,
                )
        return cls(profile.sandbox.bind_ro)

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> ReadOnlyBinds:
        return cls(plan.profile.sandbox.bind_ro)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        # A user's own profile may bind only the user's own files; a trusted one, any.
        return [CheckedPath(Path(b.host), trusted_profile, "sandbox.bind_ro", None)
                for b in self.binds_ro]

    def binds(self, source: Source) -> list[Bind]:
        return [Bind(source(Path(b.host)), str(b.container)) for b in self.binds_ro]

    def describe(self) -> list[str]:
        return [f"bind:     {b.host} read-only at {b.container}" for b in self.binds_ro]
