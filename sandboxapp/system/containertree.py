"""The processes a launched container is made of, as the host sees them: unshare, nspawn,
nspawn's stub init (the container's PID 1), the keeper at PID 2 (features/spec.py's
APP_KEEPER) and the app below it."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from sandboxapp.system.procstat import namespace_pid, session_of

# nspawn runs as the first process of a PID namespace of its own, made by unshare: when nspawn
# dies (the launcher's parent-death signal kills unshare, which kills nspawn), the kernel kills
# everything in that namespace, the container included. nspawn alone would leave its container
# running: nothing kills it where systemd does not track nspawn's unit. Its mount namespace
# (--mount-proc makes one) is the host's slave: a file handed to the running sandbox
# (system/handed.py) reaches it from the host, and nothing goes back. What the host mounts
# below the layer's other mount points does not: the launch makes them private.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--propagation", "slave",
                 "--kill-child=SIGKILL", "--"]


def container_chain(spawned_pid: int) -> list[Any]:
    """The processes from the one the launcher spawned down to the container's init: unshare,
    nspawn, nspawn's stub init (as far as they exist yet, or still)."""
    import psutil  # off the launch path: only needed here

    chain = []
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(spawned_pid)
        chain.append(process)
        while len(chain) < 3 and (children := process.children()):
            process = children[0]
            chain.append(process)
    return chain


def container_init(spawned_pid: int) -> int | None:
    """The host pid of the container's PID 1 (nspawn's stub init); None while it starts or
    stops."""
    chain = container_chain(spawned_pid)
    return int(chain[2].pid) if len(chain) == 3 else None


def stop_targets(chain: list[Any]) -> list[Any]:
    """Of the chain from container_chain, the processes a graceful stop signals: the app (the child
    of the container's PID 2, plan.APP_KEEPER) and what it left in its session after it
    exited (the new instance of a program that restarted itself), not their children, whom
    the app stops itself."""
    import psutil  # off the launch path: only needed here

    if len(chain) < 3:
        return []
    targets = []
    with contextlib.suppress(psutil.Error):
        orphans = chain[2].children()
        keeper = next((p for p in orphans if namespace_pid(p.pid) == 2), None)
        if keeper is None:
            return []
        targets = keeper.children()
        targets += [p for p in orphans
                    if p.pid != keeper.pid and session_of(p.pid) == keeper.pid]
    return targets


def stop_app(spawned_pid: int) -> None:
    """A graceful stop: SIGTERM to the app itself, so it can save its work. Signalling nspawn
    instead would SIGKILL it, and its stub init's own stop sends SIGHUP too, which ends most
    programs at once; nspawn is signalled only while there is no app yet (or any more)."""
    import psutil  # off the launch path: only needed here

    with contextlib.suppress(psutil.Error):
        chain = container_chain(spawned_pid)
        targets = stop_targets(chain)
        if not targets:
            # unshare waits for nspawn with SIGTERM blocked: a signal for it goes to nspawn.
            targets = chain[1:2] or chain[:1]
        for process in targets:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
