"""The on-disk record of what a running launch holds, for recovery after a crash.

Each launch writes `$SANDBOXAPP_RUN_DIR/PROFILE.json`: the launcher's pid and start time and one
entry per grant, layer and container, each written *before* the thing is made and dropped after
it is undone. A launcher killed with SIGKILL cannot clean up; the next sandboxapp start finds its
record, sees (psutil) that the launcher is gone, and undoes what the record still lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.nofollow import replace_private
from sandboxapp.system.procstat import is_alive, start_ticks
from sandboxapp.undo.entries import ContainerEntry, Entry, UnknownEntry, entry_from_json

E = TypeVar("E", bound=Entry)

RECORD_VERSION = 1


def process_identity(pid: int | None = None) -> tuple[int, float]:
    pid = os.getpid() if pid is None else pid
    ticks = start_ticks(pid)
    if ticks is None:
        raise SandboxError(f"process {pid} is gone")
    return pid, float(ticks)


def started_at(started: float) -> float:
    """A process start recorded by process_identity, as a Unix time."""
    import psutil  # only `ps` needs it: kept off the launch path

    return float(psutil.boot_time()) + started / os.sysconf("SC_CLK_TCK")


def record_text(profile: str, pid: int | str, started: float | str,
                entries: list[Entry], next_id: int) -> str:
    """A record as it is written."""
    return json.dumps({"version": RECORD_VERSION, "profile": profile, "pid": pid,
                       "started": started, "entries": [e.to_json() for e in entries],
                       "next_id": next_id})


def _entry(data: object) -> Entry:
    return entry_from_json(data) if isinstance(data, dict) else UnknownEntry("?", {})


@dataclass
class Record:
    path: Path
    profile: str
    pid: int
    started: float
    entries: list[Entry] = field(default_factory=list)
    next_id: int = 1

    @property
    def launcher_alive(self) -> bool:
        return is_alive(self.pid, self.started)

    def save(self) -> None:
        # Atomic, not durable: the records describe processes, which a reboot ends anyway.
        replace_private(str(self.path), record_text(self.profile, self.pid, self.started,
                                                    self.entries, self.next_id))

    def add(self, entry: E) -> E:
        entry.id = self.next_id
        self.next_id += 1
        self.entries.append(entry)
        self.save()
        return entry

    def holds(self, entry: Entry) -> bool:
        return any(e is entry for e in self.entries)

    def update(self, entry: Entry, **data: Any) -> None:
        """Change an entry's fields (a grant made, a process started) and save at once."""
        for name, value in data.items():
            if not hasattr(entry, name):
                raise AttributeError(name)
            setattr(entry, name, value)
        self.save()

    def drop(self, entry: Entry) -> None:
        self.entries = [e for e in self.entries if e is not entry]
        self.save()

    def containers(self) -> list[ContainerEntry]:
        return [e for e in self.entries if isinstance(e, ContainerEntry)]

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, str(data["profile"]), int(data["pid"]), float(data["started"]),
                       [_entry(e) for e in data["entries"]], int(data.get("next_id", 1)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # A record cut short by a crash during its first write holds nothing yet.
            return cls(path, path.stem, 0, 0.0, [])


# Below root's run directory, a directory per desktop user ("user-UID"); a profile has only
# files there (PROFILE.json, .lock, .stop), so none is taken for one.
USER_DIR_PREFIX = "user-"
# The longest a stopping app may be given to exit (`sandboxapp stop --timeout`).
MAX_STOP_GRACE = 3600.0


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700 if os.geteuid() else 0o755, parents=True, exist_ok=True)
        # Records say what to undo: only a directory of our own, that nobody else can write,
        # may hold them.
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SandboxError(
                f"refusing to keep launch records in {self.root}: it is not a directory of "
                "yours that only you can write",
                hint="remove it, or set SANDBOXAPP_RUN_DIR",
                status=ExitStatus.LAUNCHER,
            )

    def for_user(self, uid: int) -> RunDir:
        """The run directory of a desktop user's launches through the helper (root's)."""
        return RunDir(self.root / f"{USER_DIR_PREFIX}{uid}")

    def user_dirs(self) -> list[RunDir]:
        if not self.root.is_dir():
            return []
        return [RunDir(path) for path in sorted(self.root.glob(f"{USER_DIR_PREFIX}*"))
                if path.is_dir() and not path.is_symlink()]

    def record_path(self, profile: str) -> Path:
        return self.root / f"{profile}.json"

    def records(self) -> list[Record]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.json")):
            record = Record.load(path)
            if record is not None:
                found.append(record)
        return found

    def new_record(self, profile: str) -> Record:
        pid, started = process_identity()
        record = Record(self.record_path(profile), profile, pid, started)
        record.save()
        return record

    def lock_path(self, profile: str) -> Path:
        return self.root / f"{profile}.lock"

    @contextlib.contextmanager
    def profile_lock(self, profile: str, *, wait: float = 0) -> Iterator[bool]:
        """Hold the profile's lock; yields False (holding nothing) when another launcher still
        has it after `wait` seconds. The kernel drops the lock when its holder dies, however it
        dies."""
        self.ensure()
        fd = os.open(self.lock_path(profile), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            yield True
        finally:
            os.close(fd)

    def stop_request_path(self, profile: str) -> Path:
        return self.root / f"{profile}.stop"

    def request_stop(self, profile: str, launcher_pid: int, grace: float) -> None:
        """Tell the launcher about to be stopped how long its app may take to exit."""
        replace_private(str(self.stop_request_path(profile)),
                        json.dumps({"pid": launcher_pid, "grace": grace}))

    def take_stop_grace(self, profile: str, launcher_pid: int) -> float | None:
        """The grace a `stop` asked this launcher for, once; None when there is none for it
        (a request left behind for a launcher that is gone is dropped)."""
        path = self.stop_request_path(profile)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, encoding="utf-8") as stream:
                request = json.load(stream)
            os.unlink(path)
        except (OSError, ValueError):
            return None
        if not isinstance(request, dict) or request.get("pid") != launcher_pid:
            return None
        grace = request.get("grace")
        if isinstance(grace, (int, float)) and 0 < grace <= MAX_STOP_GRACE:
            return float(grace)
        return None

    def running_pid(self, profile: str) -> int | None:
        record = Record.load(self.record_path(profile))
        return record.pid if record is not None and record.launcher_alive else None

    def already_running(self, profile: str) -> SandboxError:
        pid = self.running_pid(profile)
        return SandboxError(
            f"{profile} is already running (pid {pid if pid else 'unknown'})",
            hint="one instance per profile: use the running one, or stop it first",
            status=ExitStatus.LAUNCHER,
        )
