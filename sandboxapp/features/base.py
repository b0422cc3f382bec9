"""What every grant to a sandbox is: a Feature.

A feature is one thing the sandbox is given (its persistent directories, read-only binds, the
display, sound, a session bus, the network). It says which host paths the root side must check
and stage, what it binds and sets in the container, what the helper's request carries for it,
and how `--dry-run` describes it; on the session side it is made in two steps: `prepare`
(classmethods, before nspawn starts: what the container binds must exist) and `grant` (while
nspawn starts). Each step records its undo in the launch's ledger before it makes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import Entry

if TYPE_CHECKING:
    from sandboxapp.fs.safepath import DesktopUser
    from sandboxapp.plan import LaunchPlan
    from sandboxapp.undo.ledger import Record

E = TypeVar("E", bound=Entry)

# A host path -> the path nspawn is given for it (the staged copy of the very inode checked).
Source = Callable[[Path], Path]


@dataclass(frozen=True)
class CheckedPath:
    """A host path the container will see, checked and staged by the root side."""

    path: Path
    trusted: bool  # may be another's than the user's (root's display socket, for one)
    what: str  # named in the error when it is refused
    file_type: int | None  # the stat.S_IF* it must be, if any
    # Seconds it may take to appear (a server's socket, the server starting as the container
    # does): waited for, then checked like any other.
    appears_within: float = 0.0


class Recorder(Protocol):
    """What a grant needs of the launch's supervisor (launch/supervisor.py): the record of the
    launch, and a way to add an entry to it with its undo, before the grant is made."""

    @property
    def record(self) -> Record | None: ...

    def add(self, stack: ExitStack, entry: E) -> E: ...


@dataclass(frozen=True)
class Session:
    """The desktop user's side of a launch, where the grants are made."""

    plan: LaunchPlan
    user: DesktopUser
    environ: Mapping[str, str]
    supervisor: Recorder
    warn: Callable[[str], None]
    run_dir: Path
    # Hand the running sandbox a file the user chose; its path inside (system/handed.py).
    hand: Callable[[Path], PurePosixPath] = field(default=lambda path: PurePosixPath(path))
    # Whether the sandbox's window has the user's focus; None where the display path cannot
    # tell (Feature.has_focus).
    focused: Callable[[], bool | None] = field(default=lambda: None)

    def host_dir(self, kind: str = "") -> Path:
        """The sandbox's directory on the host for its sound socket (kind ""), or for its X
        authorization: in the user's runtime directory, or the run directory."""
        runtime = self.environ.get("XDG_RUNTIME_DIR", "")
        if runtime.startswith("/") and Path(runtime).is_dir():
            base = Path(runtime) / "sandboxapp"
        else:
            base = self.run_dir / "sound"
        name = self.plan.profile.name
        return base / kind / name if kind else base / name


class Feature:
    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        """trusted_profile: the profile is in a root-owned profile directory."""
        return []

    def binds(self, source: Source) -> list[Bind]:
        return []

    def env(self) -> list[tuple[str, str]]:
        return []

    def wrap(self, command: tuple[str, ...]) -> tuple[str, ...]:
        """The app's command, as this feature runs it."""
        return command

    def private_network(self) -> bool:
        return False

    # Its part's key in the helper's request (features/request.py); "" for a feature whose
    # part is the profile's alone.
    KEY: ClassVar[str] = ""

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> Feature | None:
        """The session side's, before nspawn starts (what the container binds is made, each
        with its undo first); None where the launch does not get it."""
        return cls.from_part(session.plan, None)

    def part(self) -> Any:
        """What the helper's request carries of it (JSON), read back by from_part."""
        return None

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> Feature | None:
        """The root side's, from the profile and the request's part (checked here: it comes
        from the user); None where the launch does not get it."""
        raise NotImplementedError

    def describe(self) -> list[str]:
        """Its lines in `run --dry-run`."""
        return []

    def check_as_sandbox(self, uid: int) -> Callable[[], None] | None:
        """The root side's: a check made as the sandbox's own UID (uid) while nspawn starts;
        what it returns is called before the app's gate opens, and raises to keep it shut."""
        return None

    def grant(self, session: Session, stack: ExitStack) -> None:
        """Made while nspawn starts, before the app's gate opens."""

    def ask_to_quit(self) -> bool:
        """The session side's, when the sandbox is to stop: ask the app to quit the way a
        desktop's logout does; True if it was asked."""
        return False

    def has_focus(self) -> bool | None:
        """The session side's: whether the sandbox's window has the user's focus; None where
        this feature cannot tell."""
        return None

    def ask_to_close(self) -> bool:
        """The session side's, where no feature could ask the app to quit as a whole: ask its
        windows to close, as their close buttons do; True if one was asked."""
        return False
