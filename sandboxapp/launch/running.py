"""Seeing and stopping what runs: `sandboxapp ps` and `sandboxapp stop`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass

import psutil

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import DEFAULT_RUN_DIR, Locations
from sandboxapp.system.containertree import container_init
from sandboxapp.undo.ledger import MAX_STOP_GRACE, Record, RunDir, started_at

CPU_SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Sandbox:
    profile: str
    launcher_pid: int
    container_pid: int | None  # the container's PID 1, as the host sees it
    host_uid: int | None
    uptime_seconds: float
    cpu_percent: float
    memory_bytes: int
    grants: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _run_dirs(locations: Locations) -> list[RunDir]:
    """The run directories to look in: this side's own, and the root side's."""
    dirs = [locations.run_dir]
    if DEFAULT_RUN_DIR not in dirs:
        dirs.append(DEFAULT_RUN_DIR)
    found = [RunDir(d) for d in dirs]
    if os.geteuid() == 0:  # and the helper's, for each desktop user
        found += [user_dir for run_dir in list(found) for user_dir in run_dir.user_dirs()]
    return found


def _live_records(locations: Locations) -> dict[str, list[Record]]:
    by_profile: dict[str, list[Record]] = {}
    for run_dir in _run_dirs(locations):
        try:
            records = run_dir.records()
        except OSError:
            continue
        for record in records:
            if record.launcher_alive:
                by_profile.setdefault(record.profile, []).append(record)
    return by_profile


def _container_tree(records: list[Record]) -> tuple[int | None, int | None, list[psutil.Process]]:
    """(the container's init, its host UID, the processes below what the launcher spawned)."""
    for record in records:
        for entry in record.containers():
            if entry.pid is not None:
                try:
                    tree = psutil.Process(entry.pid).children(recursive=True)
                except psutil.Error:
                    continue
                return container_init(entry.pid), entry.uid, tree
    # A desktop user's launch: its container entry is in the root side's record, which only
    # root reads; the container is found below the user's own launcher instead (sudo, the
    # helper, then what the helper spawned).
    for record in records:
        with contextlib.suppress(psutil.Error):
            for process in psutil.Process(record.pid).children(recursive=True):
                if process.name() == "unshare" and process.uids().real == 0:
                    init = container_init(process.pid)
                    uid = psutil.Process(init).uids().real if init is not None else None
                    return init, uid, process.children(recursive=True)
    return None, None, []


def _grants(records: list[Record]) -> tuple[str, ...]:
    return tuple(line for record in records for entry in record.entries
                 if (line := entry.grant_line()) is not None)


def _usage(tree: list[psutil.Process]) -> tuple[float, int]:
    def cpu_total() -> float:
        total = 0.0
        for process in tree:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    before = cpu_total()
    time.sleep(CPU_SAMPLE_SECONDS)
    percent = (cpu_total() - before) / CPU_SAMPLE_SECONDS * 100
    memory = 0
    for process in tree:
        with contextlib.suppress(psutil.Error):
            memory += process.memory_info().rss
    return round(percent, 1), memory


def running_sandboxes(locations: Locations) -> list[Sandbox]:
    sandboxes = []
    for profile, records in sorted(_live_records(locations).items()):
        launcher = min(records, key=lambda r: r.started)
        init, uid, tree = _container_tree(records)
        cpu, memory = _usage(tree) if tree else (0.0, 0)
        sandboxes.append(Sandbox(profile, launcher.pid, init, uid,
                                 round(time.time() - started_at(launcher.started), 1), cpu, memory,
                                 _grants(records)))
    return sandboxes


# After the timeout: time for the launcher to kill the app and take its grants back.
STOP_MARGIN = 5.0


def stop(locations: Locations, profile: str, timeout: float) -> float:
    """Stop a running sandbox gracefully; how long it took. Its launcher is told the timeout
    and gets SIGTERM: the app is then asked to quit (or gets SIGTERM where it cannot be asked)
    and has `timeout` seconds to do so before it is signalled and killed; the launcher takes
    the grants back as on a normal exit. Should the launcher not be gone soon after, a second
    SIGTERM tells it to kill the app at once."""
    if not 0 < timeout <= MAX_STOP_GRACE:
        raise SandboxError(f"--timeout {timeout:g} is out of range; allowed: more than 0 and "
                           f"up to {MAX_STOP_GRACE:g} seconds", status=ExitStatus.USAGE)
    records = _live_records(locations).get(profile)
    if not records:
        raise SandboxError(f"{profile} is not running", status=ExitStatus.USAGE,
                           hint="'sandboxapp ps' shows what runs")
    mine = [r for r in records if _owned_by_caller(r.pid)]
    if not mine:
        raise SandboxError(f"{profile} was started by another user", status=ExitStatus.USAGE)
    launcher = min(mine, key=lambda r: r.started)
    started = time.monotonic()
    process = psutil.Process(launcher.pid)
    RunDir(locations.run_dir).request_stop(profile, launcher.pid, timeout)
    process.send_signal(signal.SIGTERM)
    if not _wait_gone(process, timeout + STOP_MARGIN):
        process.send_signal(signal.SIGTERM)  # the second one: the app is killed now
        if not _wait_gone(process, 30):
            raise SandboxError(f"{profile} did not stop (launcher pid {launcher.pid})",
                               status=ExitStatus.FAILURE)
    return time.monotonic() - started


def _wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Whether the process ended within timeout (a zombie its parent has not reaped yet has
    ended too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _owned_by_caller(pid: int) -> bool:
    try:
        return os.geteuid() == 0 or psutil.Process(pid).uids().real == os.getuid()
    except psutil.Error:
        return False
