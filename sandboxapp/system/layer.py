"""The throw-away writable layer: an overlayfs of our own over the pristine image.

The upper and work directories are on disk beside the images (what the app writes is not
limited to RAM), the lower is the image, already owned by its UID block, so nothing is copied or
chowned per launch (measured: about 64 ms for a whole run, whatever the image's size).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.mounts import mount_layer, unmount
from sandboxapp.fs.util import mounts_under, remove_tree

LAYER_MARKER = "layer.json"


def layer_marker(rootfs: Path) -> str:
    root_id = rootfs.stat()
    return json.dumps({
        "rootfs": str(rootfs),
        # The image an update may replace meanwhile is recognised by its inode, not its path.
        "rootfs_id": [root_id.st_dev, root_id.st_ino],
    })


def create_layer(layer: Path, rootfs: Path, *, state: Path | None) -> Path:
    """Mount a throw-away layer over rootfs at layer/merged; the merged tree's path.

    state: a stateful profile's directory for one user, whose changes the overlay keeps
    there for that user's next run. The layer directory itself (its binds, its gate, a
    stateless run's changes) is made anew for every launch, so no launch ever sees what an
    earlier one of the same name left in it.
    """
    layer.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if layer.exists():
        # Left by a launch whose record is gone (a reboot empties the run directory); the
        # caller holds the profile's lock, so nothing uses it.
        remove_layer(layer, kill_leftovers=True)
    layer.mkdir(mode=0o700)
    (layer / LAYER_MARKER).write_text(layer_marker(rootfs))
    try:
        if state is not None:
            for directory in (*reversed(state.parents[:2]), state):  # .state/PROFILE/UID
                directory.mkdir(mode=0o700, exist_ok=True)
        return Path(mount_layer(str(layer), str(rootfs), volatile=state is None,
                                state=str(state) if state is not None else None))
    except OSError as exc:
        raise SandboxError(f"cannot mount the writable layer in {layer}: {exc.strerror}",
                           status=ExitStatus.LAUNCHER) from None


# The programs a launch runs its container with, on the host (their root is the host's):
# unshare, and the nspawn it forks.
_CONTAINER_RUNNERS = frozenset({"unshare", "systemd-nspawn"})


def kill_processes_in(tree: Path) -> list[int]:
    """SIGKILL every process whose root directory is in tree (a container nobody supervises),
    and the unshare and systemd-nspawn that run a container on it: a launcher killed while
    they start may leave them behind, outside its reach (a parent-death signal set after the
    parent died never comes), still setting up, with nothing rooted in the tree yet. They are
    waited for: the layer's mounts are theirs until they are gone."""
    import psutil  # off the launch path: only needed here

    directory = f"--directory={tree}"
    killed = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            root = Path(os.readlink(f"/proc/{process.pid}/root"))
            runs_it = (process.info["name"] in _CONTAINER_RUNNERS
                       and directory in (process.info["cmdline"] or []))
            if runs_it or root == tree or tree in root.parents:
                process.send_signal(signal.SIGKILL)
                killed.append(process)
    psutil.wait_procs(killed, timeout=10)
    return [process.pid for process in killed]


def remove_layer(layer: Path, *, kill_leftovers: bool) -> None:
    """Unmount a layer and, unless it is kept, delete it; safe to call for half-made layers.

    kill_leftovers: first kill processes still running in it (recovery after a crash; after a
    normal exit the container's PID namespace is already gone).
    """
    if not layer.exists():
        return
    if kill_leftovers:
        kill_processes_in(layer / "merged")
    for mount_point in mounts_under(layer):
        try:
            unmount(str(mount_point))
        except OSError as exc:
            raise SandboxError(f"cannot unmount {mount_point}: {exc.strerror}") from None
    if (layer / LAYER_MARKER).exists():
        remove_tree(layer, marker=LAYER_MARKER, check_users=kill_leftovers)
    elif not any(layer.iterdir()):
        layer.rmdir()
