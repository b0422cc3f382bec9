"""The grants a sandbox gets, one class each (base.py says what they all do)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxapp.features.base import Feature, Session
from sandboxapp.features.container import NetworkAccess, SessionBus
from sandboxapp.features.display import DisplayAccess
from sandboxapp.features.files import PersistentDirs, ReadOnlyBinds
from sandboxapp.features.sound import SoundAccess
from sandboxapp.host.sound import SoundPaths
from sandboxapp.profile.model import X11Access

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

__all__ = ["Feature", "Session", "features_for", "prepare_features"]


def _inside(plan: LaunchPlan) -> list[Feature]:
    features: list[Feature] = [SessionBus()] if plan.profile.sandbox.session_bus else []
    return [*features, NetworkAccess(plan.profile.sandbox.network)]


def features_for(plan: LaunchPlan, *, x11_dir: Path | None,
                 sound_dir: Path | None) -> tuple[Feature, ...]:
    """A launch's features as the root side sees them: from the plan and the directories the
    session side made (the helper's request names them)."""
    sandbox = plan.profile.sandbox
    features: list[Feature] = [PersistentDirs(plan.persist), ReadOnlyBinds(sandbox.bind_ro)]
    if plan.display is not None:
        trusted = sandbox.x11 is X11Access.TRUSTED
        features.append(DisplayAccess(plan.display, trusted, None if trusted else x11_dir,
                                      plan.image.meta.uid_base if plan.image else None))
    if sound_dir is not None:
        features.append(SoundAccess(SoundPaths(sound_dir), sandbox.microphone))
    return (*features, *_inside(plan))


def prepare_features(session: Session, stack: ExitStack) -> tuple[Feature, ...]:
    """The session side's first step, before nspawn starts: what the container binds is made
    (each recorded with its undo first); the same features, in the same order, as
    features_for gives the root side."""
    features: list[Feature | None] = [
        PersistentDirs.prepare(session, stack),
        ReadOnlyBinds.prepare(session, stack),
        DisplayAccess.prepare(session, stack),
        SoundAccess.prepare(session, stack),
    ]
    return (*(f for f in features if f is not None), *_inside(session.plan))
