"""The grants a sandbox gets, one class each (base.py says what they all do)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.features.base import Feature, Session
from sandboxapp.features.container import NetworkAccess, SessionBus
from sandboxapp.features.display import X11_CONTAINER_DIR, X11_DIR, DisplayAccess
from sandboxapp.features.files import PersistentDirs, ReadOnlyBinds
from sandboxapp.features.portal import FileChooser
from sandboxapp.features.quit import SessionManagement
from sandboxapp.features.request import Action, HelperRequest, refused
from sandboxapp.features.sound import PULSE_DIR, SoundAccess
from sandboxapp.features.wayland import WaylandAccess

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

__all__ = ["REGISTRY", "Feature", "Session", "features_for", "grants_of", "helper_request",
           "naming", "prepare_features"]

# Every grant a sandbox may get, one class each, in the order of their binds and environment:
# both sides of a launch, the dry run and a join iterate this.
# WaylandAccess wraps the command outside SessionBus: the runtime directory it makes is there
# before the bus starts.
REGISTRY: tuple[type[Feature], ...] = (PersistentDirs, ReadOnlyBinds, DisplayAccess,
                                       SoundAccess, SessionManagement, SessionBus,
                                       FileChooser, WaylandAccess, NetworkAccess)


def features_for(plan: LaunchPlan, grants: Mapping[str, Any]) -> tuple[Feature, ...]:
    """A launch's features as the root side sees them: from the profile (in the plan) and
    each feature's part of the helper's request."""
    unknown = set(grants) - {cls.KEY for cls in REGISTRY if cls.KEY}
    if unknown:
        raise refused(f"no grant is called {', '.join(sorted(unknown))}")
    found = (cls.from_part(plan, grants.get(cls.KEY)) for cls in REGISTRY)
    return tuple(feature for feature in found if feature is not None)


def prepare_features(session: Session, stack: ExitStack) -> tuple[Feature, ...]:
    """The session side's first step, before nspawn starts: the same features, in the same
    order, as features_for gives the root side."""
    found = (cls.prepare(session, stack) for cls in REGISTRY)
    return tuple(feature for feature in found if feature is not None)


def grants_of(features: Sequence[Feature]) -> dict[str, Any]:
    """The helper's request's part of each feature that has one."""
    return {feature.KEY: part for feature in features if (part := feature.part()) is not None}


def naming(plan: LaunchPlan, layer: Path | None = None) -> dict[str, Any]:
    """The parts that only name what a launch of the plan uses, where nothing is made for
    them: a dry run's (layer: where it would make its directories), a join's into a running
    sandbox (its plan names the display that sandbox uses; its directories are bound already).
    Each feature's environment and binds come from them."""
    parts: dict[str, Any] = {}
    if plan.display is not None:
        parts[DisplayAccess.KEY] = DisplayAccess.naming(
            plan.display.number,
            X11_CONTAINER_DIR if layer is None else PurePosixPath(layer / X11_DIR))
    if plan.profile.sandbox.pulseaudio:
        parts[SoundAccess.KEY] = {"dir": str(PULSE_DIR if layer is None else layer / "sound")}
    if (native := WaylandAccess.naming(plan, layer)) is not None:
        parts[WaylandAccess.KEY] = native
    if plan.profile.sandbox.file_chooser and layer is not None:
        parts[FileChooser.KEY] = {"dir": str(layer / "portal")}
    return parts


def helper_request(plan: LaunchPlan, action: Action, data_home: Path,
                   features: Sequence[Feature] = ()) -> HelperRequest:
    """What the privileged helper is asked to do for the plan: a launch with the features'
    grants, or a join or a hand into the running sandbox, which makes no grant: what the
    sandbox uses is only named, for the command's environment (the root side takes the
    display of the sandbox's own from the running launch's record, launch/join.py)."""
    grants = naming(plan) if action in (Action.JOIN, Action.HAND) else grants_of(features)
    return HelperRequest(action, plan.profile.name, plan.profile.path.absolute(), data_home,
                         program=plan.program, args=plan.extra_args, downloads=plan.downloads,
                         files=tuple(handed.inside.name for handed in plan.handed
                                     if action in (Action.LAUNCH, Action.HAND)),
                         grants=grants)
