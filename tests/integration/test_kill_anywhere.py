"""SIGKILL of root's launcher at any moment of a launch leaves nothing that `cleanup` or the
next launch does not take back, and never touches the persistent files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from sandboxapp.fs.util import mount_points, mounts_under
from tests.integration.faults import APP, PRECIOUS, Moment, kill_at_moments, recorded
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    Session,
    image_uid,
    sandbox_processes,
    wait_for_file,
    wait_for_no_sandbox_processes,
    waiting_command,
    write_variant,
)


def moments(session: Session) -> list[Moment]:
    record = session.run_dir / f"{NAME}.json"
    persist = session.persist_dir()
    return [
        Moment("at once", lambda: True),
        Moment("record written", record.exists),
        Moment("before the X grant", lambda: recorded(record, "x11")),
        Moment("after the X authorization",
               (session.run_dir / "sound" / ".x11" / NAME / "Xauthority").exists),
        Moment("before the sound socket", lambda: recorded(record, "sound")),
        Moment("after the sound socket", (session.run_dir / "sound" / NAME / "native").exists),
        Moment("layer mounted",
               lambda: session.image_dir / ".layers" / NAME / "merged" in set(mount_points())),
        Moment("nspawn starting", lambda: recorded(record, "container", with_pid=True)),
        Moment("app running", (persist / "ready").exists),
        Moment("during take-back", (persist / "done").exists),
    ]


def left_behind(session: Session, grants: list[str], modules: list[str]) -> list[str]:
    problems = []
    if session.x_grants() != grants:
        problems.append(f"X host list {session.x_grants()}")
    if session.socket_modules() != modules:
        problems.append(f"sound modules {session.socket_modules()}")
    if (session.run_dir / "sound" / NAME).exists():
        problems.append("a sound directory")
    if (session.run_dir / "sound" / ".x11" / NAME).exists():
        problems.append("an X directory")
    if mounts := mounts_under(session.image_dir):
        problems.append(f"mounts {mounts}")
    layers = session.image_dir / ".layers"
    if layers.is_dir() and (left := os.listdir(layers)):
        problems.append(f"layers {left}")
    if records := list(session.run_dir.glob("*.json")):
        problems.append(f"records {records}")
    if processes := wait_for_no_sandbox_processes(image_uid(session), timeout=10):
        problems.append(f"processes {processes}")
    return problems


def test_sigkill_at_twenty_moments_of_a_launch_leaves_nothing(session: Session,
                                                             tmp_path: Path) -> None:
    profile = write_variant(session.profiles, ["/bin/sh", "-c", APP], FULL_SANDBOX)
    grants, modules = session.x_grants(), session.socket_modules()
    session.persist_dir().mkdir(parents=True)
    (session.persist_dir() / "precious").write_text(PRECIOUS)
    # The X authorizations the killed launches held, as a sandbox could have kept a copy.
    cookie = session.run_dir / "sound" / ".x11" / NAME / "Xauthority"
    kept: list[Path] = []

    def keep_cookie() -> None:
        with contextlib.suppress(OSError):
            kept.append(Path(shutil.copy(cookie, tmp_path / f"cookie-{len(kept)}")))

    def nothing_left() -> list[str]:
        problems = left_behind(session, grants, modules)
        assert session.xserver is not None
        for copy in kept:
            probe = subprocess.run(["xdpyinfo"], env={**session.xserver.client_env(),
                                                      "XAUTHORITY": str(copy)},
                                   capture_output=True, text=True, check=False)
            if probe.returncode == 0:
                problems.append(f"the X authorization in {copy.name} still admits clients")
        return problems

    killed_in = kill_at_moments(
        moments(session), start=lambda: session.start(str(profile)),
        # Half the time `cleanup` takes back what the launch left, half the time the next
        # launch does (and runs as if nothing had happened).
        undo=lambda cycle: (session.sandboxapp("cleanup") if cycle % 2 == 0
                            else session.run(str(profile))),
        left_behind=nothing_left, data=session.persist_dir(), repeat=2, at_kill=keep_cookie)
    print(f"{len(kept)} killed launches held an X authorization")
    assert kept, "no launch was killed while it held an X authorization"
    # The launches were killed, not finished before the signal came, in most moments.
    assert sum("killed" in line for line in killed_in) >= 16, killed_in
    final = session.run(str(profile))
    assert final.returncode == 0, final.stderr
    assert not left_behind(session, grants, modules)


def test_cleaning_up_after_a_crash_spares_another_sandbox_of_the_same_image(
        session: Session, tmp_path: Path) -> None:
    """A launch killed with SIGKILL leaves a record naming the image's UID block, which every
    sandbox of that image runs in, a desktop user's too (with a run directory, lock and record
    of its own). The cleanup that takes back the crashed launch must end only what is its own:
    the other sandbox, running meanwhile, runs on."""
    profile = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    launch = session.start(str(profile))
    try:
        wait_for_file(session.persist_dir() / "ready", launch)
        # Its processes but the loop's short-lived sleeps.
        running = {p for p in sandbox_processes(image_uid(session)) if not p.endswith(" sleep")}
        assert running
        # What a crashed launch of the image leaves, in a run directory of its own.
        crashed = tmp_path / "crashed-run"
        crashed.mkdir(mode=0o700)
        (crashed / f"{NAME}.json").write_text(json.dumps({
            "version": 1, "profile": NAME, "pid": 999999999, "started": 1.0, "next_id": 2,
            "entries": [{"id": 1, "kind": "container", "machine": f"sandboxapp-{NAME}",
                         "uid": image_uid(session), "user": 0, "profile_file": str(profile),
                         "pid": None, "started": None}]}))
        result = session.sandboxapp("cleanup",
                                    env={**session.env(), "SANDBOXAPP_RUN_DIR": str(crashed)})
        assert result.returncode == 0, result.stderr
        assert f"cleaned up after {NAME}" in result.stdout, result.stdout
        assert not (crashed / f"{NAME}.json").exists()
        # The running sandbox lost nothing: its processes, its launcher.
        assert launch.poll() is None, launch.communicate()
        assert running <= set(sandbox_processes(image_uid(session)))
        (session.persist_dir() / "go").touch()
        assert launch.wait(timeout=60) == 0, launch.stderr.read() if launch.stderr else ""
    finally:
        # Stopped the way a user stops it, so that it takes back all it holds.
        (session.persist_dir() / "go").touch()
        with contextlib.suppress(subprocess.TimeoutExpired):
            launch.wait(timeout=30)
        if launch.poll() is None:
            launch.terminate()
            launch.wait(timeout=30)
