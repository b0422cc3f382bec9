"""`sandboxapp reset PROFILE`: drop the changes a stateful profile kept for the user who asks.

A profile with `stateless = false` keeps what its program changed outside its persistent
directories (an overlay's upper directory below the image store, a directory per user and root's
alone). Resetting drops that directory for this one user, so the next launch starts from the
pristine image again; the persistent directories (the user's own files) are never touched. It
takes the lock a launch of the profile takes, so no launch uses the changes meanwhile. A
desktop user's changes are root's files: the privileged helper drops them, for the user sudo
names only.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandboxapp.command import base_env, run_attached
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.request import Action, HelperRequest
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.image.store import ImageStore
from sandboxapp.launch.helperclient import helper_argv
from sandboxapp.paths import Locations
from sandboxapp.profile.model import Profile
from sandboxapp.undo.ledger import RunDir


def _check_stateful(profile: Profile) -> None:
    if profile.sandbox.stateless:
        raise SandboxError(f"{profile.name} keeps no changes between runs (stateless = true): "
                           "there is nothing to reset", status=ExitStatus.USAGE)


def _running(name: str) -> SandboxError:
    return SandboxError(f"{name} is running: the changes it keeps cannot go now",
                        hint=f"stop it first: sandboxapp stop {name}", status=ExitStatus.USAGE)


def reset_here(profile: Profile, locations: Locations, user: DesktopUser) -> Path | None:
    """As root: drop what the profile kept for user; the directory it was in, or None where it
    kept nothing. (A launch for that user under another lock, or one killed whose layer is
    still mounted, is found by the overlay that writes there.)"""
    _check_stateful(profile)
    with RunDir(locations.run_dir).profile_lock(profile.name) as held:
        if not held:
            raise _running(profile.name)
        return ImageStore(locations.image_dir).remove_state(profile.name, user.uid)


def said(profile: Profile, dropped: Path | None) -> str:
    """What a reset tells the user."""
    return (f"dropped what {profile.name} kept for you: its next launch starts from its image"
            if dropped is not None else f"{profile.name} kept nothing for you to drop")


def reset(profile: Profile, locations: Locations, user: DesktopUser) -> str | None:
    """Drop what the profile kept for user: a line that says so where this process did it;
    None where the privileged helper did, and said so itself."""
    if os.geteuid() == 0:
        return said(profile, reset_here(profile, locations, user))
    _check_stateful(profile)
    # The user's own launches hold this lock while they run (their root side, the helper's).
    with RunDir(locations.run_dir).profile_lock(profile.name) as held:
        if not held:
            raise _running(profile.name)
        request = HelperRequest(Action.RESET, profile.name, profile.path.absolute(),
                                Path("/nonexistent"))
        status = run_attached(helper_argv(request.to_json()), env=base_env())
    if status != 0:
        # The helper said why, on the same terminal.
        raise SandboxError(f"the changes {profile.name} keeps were not dropped", status=status)
    return None
