"""Before a launch: the profile's image made ready (built where it is missing, updated where
it is old and the profile asks for that), and what is worth saying about it. How an image is
built or updated (here as root, or through the privileged helper for a desktop user) is the
caller's: `work`."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

from sandboxapp.errors import SandboxError
from sandboxapp.image.store import ImageStore, image_is_stale
from sandboxapp.profile.model import Profile


def make_ready(profile: Profile, store: ImageStore, warn: Callable[[str], None], *,
               on_desktop: bool, work: Callable[[str], None]) -> None:
    """Build a missing image, update one that is too old where the profile asks for it (or
    say how), say when the profile has moved on. on_desktop: a first build is also told on
    the desktop (a menu entry's launch has no terminal). work("build" or "update") does it."""
    action = _needed(profile, store, warn, on_desktop)
    if action is None:
        return
    try:
        work(action)
    except SandboxError as error:
        if action == "build":
            raise
        # The image there is still a working one: start it, and say why it is old.
        warn(f"{error.message}; starting the image as it is")


def _needed(profile: Profile, store: ImageStore, warn: Callable[[str], None],
            on_desktop: bool) -> str | None:
    """What the profile's image needs before this launch ("build", "update" or None)."""
    image = store.get(profile.name)
    if image is None:
        if on_desktop:
            from sandboxapp.host.notify import notify

            notify(os.environ, f"sandboxapp: starting {profile.name} for the first time",
                   "Its image is being built: this takes a minute or two.")
        warn(f"the image for {profile.name} is not built yet: building it first "
             "(a minute or two)")
        return "build"
    if image_is_stale(profile, image):
        warn(f"the image for {profile.name} is stale: its profile's [image] section changed; "
             f"rebuild it with: sandboxapp image build {profile.name}")
        return None
    age = datetime.now(UTC) - image.meta.refreshed_at
    if age.days < profile.updates.update_after_days:
        return None
    if profile.updates.auto_update:
        warn(f"the image for {profile.name} is {age.days} days old: updating it first")
        return "update"
    warn(f"the image for {profile.name} is {age.days} days old; update it with: "
         f"sandboxapp image update {profile.name}")
    return None
