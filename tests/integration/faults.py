"""SIGKILL of a launcher at chosen moments of its launch: the loop both the root and the
desktop user's fault tests run.

Each moment is a state of the launch as a user could see it (its record, the X host list, the
sound socket, the layer, the app's marks), reached by watching in a tight loop, plus a random
few milliseconds; the seed is printed so that a failing order can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The app of a fault test: it reads the user's file, marks that it runs, and marks that it ends.
APP = ("cat /root/data/precious > /dev/null; touch /root/data/ready; sleep 0.3; "
       "touch /root/data/done")
PRECIOUS = "the user's work\n"


@dataclass(frozen=True)
class Moment:
    name: str
    reached: Callable[[], bool]


def kill_at_moments(
    moments: Sequence[Moment],
    start: Callable[[], subprocess.Popen[str]],
    undo: Callable[[int], subprocess.CompletedProcess[str]],
    left_behind: Callable[[], list[str]],
    data: Path,
    repeat: int = 1,
    at_kill: Callable[[], None] = lambda: None,
) -> list[str]:
    """Each moment `repeat` times, in a random order: start a launch, SIGKILL it at the moment,
    undo (given the cycle's number: `cleanup` or the next launch), and find nothing left and
    the data directory's precious file intact; at_kill runs just before each SIGKILL. One
    line per cycle: where it was killed."""
    seed = int(os.environ.get("SANDBOXAPP_TEST_SEED", time.time_ns() % 10**6))
    print(f"seed {seed} (SANDBOXAPP_TEST_SEED replays it)")
    rng = random.Random(seed)
    precious = data / "precious"
    plan = [(moment, rng.uniform(0, 0.02)) for moment in moments for _ in range(repeat)]
    rng.shuffle(plan)
    killed_in = []
    for cycle, (moment, delay) in enumerate(plan):
        for mark in ("ready", "done"):
            (data / mark).unlink(missing_ok=True)
        launch = start()
        deadline = time.monotonic() + 30
        while not moment.reached() and launch.poll() is None:
            assert time.monotonic() < deadline, f"{moment.name} never came"
        time.sleep(delay)
        at_kill()
        launch.send_signal(signal.SIGKILL)
        status = launch.wait(timeout=30)
        killed_in.append(f"{moment.name} +{delay * 1000:.0f} ms: "
                         f"{'killed' if status == -signal.SIGKILL else f'exited {status}'}")
        result = undo(cycle)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (
            moment.name, result.stderr)
        problems = left_behind()
        assert not problems, (f"cycle {cycle}, SIGKILL {killed_in[-1]}", problems)
        assert precious.read_text() == PRECIOUS
    print("\n".join(killed_in))
    return killed_in


def recorded(record: Path, kind: str, *, with_pid: bool = False) -> bool:
    """Whether the launch record, read now, has an entry of kind (with a pid set)."""
    try:
        entries = json.loads(record.read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return False
    return any(e.get("kind") == kind and (not with_pid or e.get("pid") is not None)
               for e in entries)
