"""SIGKILL of the launcher at any moment of a launch leaves nothing that `cleanup` or the next
launch does not take back, and never touches the persistent files.

Each moment is a state of the launch as a user could see it (its record, the X host list, the
sound socket, the layer, the app's marks), reached by watching in a tight loop, plus a random
few milliseconds; the seed is printed so that a failing order can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandboxapp.fsutil import mount_points, mounts_under
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    Session,
    image_uid,
    wait_for_no_sandbox_processes,
    write_variant,
)

APP = ("cat /root/data/precious > /dev/null; touch /root/data/ready; sleep 0.3; "
       "touch /root/data/done")


@dataclass(frozen=True)
class Moment:
    name: str
    reached: Callable[[Session], bool]


def _entries(session: Session) -> list[dict[str, object]]:
    try:
        entries = json.loads((session.run_dir / f"{NAME}.json").read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return []
    return list(entries)


def _recorded(kind: str, **having: object) -> Callable[[Session], bool]:
    def reached(session: Session) -> bool:
        return any(e.get("kind") == kind and all(
            (e.get(k) is not None) == bool(v) for k, v in having.items())
            for e in _entries(session))
    return reached


def _granted(session: Session) -> bool:
    return f"SI:localuser:#{image_uid(session)}" in session.x_grants()


def _sound_socket(session: Session) -> bool:
    return (session.run_dir / "sound" / NAME / "native").exists()


def _layer_mounted(session: Session) -> bool:
    return session.image_dir / ".layers" / NAME / "merged" in set(mount_points())


def _mark(name: str) -> Callable[[Session], bool]:
    return lambda session: (session.persist_dir() / name).exists()


MOMENTS = [
    Moment("at once", lambda session: True),
    Moment("record written", lambda session: (session.run_dir / f"{NAME}.json").exists()),
    Moment("before the X grant", _recorded("x11")),
    Moment("after the X grant", _granted),
    Moment("before the sound socket", _recorded("sound")),
    Moment("after the sound socket", _sound_socket),
    Moment("layer mounted", _layer_mounted),
    Moment("nspawn starting", _recorded("container", pid=True)),
    Moment("app running", _mark("ready")),
    Moment("during take-back", _mark("done")),
]


def _left_behind(session: Session, grants: list[str], modules: list[str]) -> list[str]:
    problems = []
    if session.x_grants() != grants:
        problems.append(f"X host list {session.x_grants()}")
    if session.socket_modules() != modules:
        problems.append(f"sound modules {session.socket_modules()}")
    if (session.run_dir / "sound" / NAME).exists():
        problems.append("a sound directory")
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


def test_sigkill_at_twenty_moments_of_a_launch_leaves_nothing(session: Session) -> None:
    seed = int(os.environ.get("SANDBOXAPP_TEST_SEED", time.time_ns() % 10**6))
    print(f"seed {seed} (SANDBOXAPP_TEST_SEED replays it)")
    rng = random.Random(seed)
    profile = write_variant(session.profiles, ["/bin/sh", "-c", APP], FULL_SANDBOX)
    grants, modules = session.x_grants(), session.socket_modules()
    session.persist_dir().mkdir(parents=True)
    precious = session.persist_dir() / "precious"
    precious.write_text("the user's work\n")
    plan = [(moment, rng.uniform(0, 0.02)) for moment in MOMENTS for _ in range(2)]
    rng.shuffle(plan)
    killed_in = []
    for cycle, (moment, delay) in enumerate(plan):
        for mark in ("ready", "done"):
            (session.persist_dir() / mark).unlink(missing_ok=True)
        launch = session.start(str(profile))
        deadline = time.monotonic() + 30
        while not moment.reached(session) and launch.poll() is None:
            assert time.monotonic() < deadline, f"{moment.name} never came"
        time.sleep(delay)
        launch.send_signal(signal.SIGKILL)
        status = launch.wait(timeout=30)
        killed_in.append(f"{moment.name} +{delay * 1000:.0f} ms: "
                         f"{'killed' if status == -signal.SIGKILL else f'exited {status}'}")
        # Half the time `cleanup` takes back what the launch left, half the time the next
        # launch does (and runs as if nothing had happened).
        undo = session.sandboxapp("cleanup") if cycle % 2 == 0 else session.run(str(profile))
        assert undo.returncode == 0 and "Traceback" not in undo.stderr, (
            moment.name, undo.stderr)
        problems = _left_behind(session, grants, modules)
        assert not problems, (f"cycle {cycle}, SIGKILL {killed_in[-1]}", problems)
        assert precious.read_text() == "the user's work\n"
    print("\n".join(killed_in))
    # The launches were killed, not finished before the signal came, in most moments.
    assert sum("killed" in line for line in killed_in) >= 16, killed_in
    final = session.run(str(profile))
    assert final.returncode == 0, final.stderr
    assert not _left_behind(session, grants, modules)
