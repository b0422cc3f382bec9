"""User namespaces that only describe an idmapping, for idmapped mounts: a file's owner on
the host seen as the container's root."""

from __future__ import annotations

import os
import subprocess
import time

from sandboxapp.command import base_env, spawn
from sandboxapp.errors import ExitStatus, SandboxError

# How long a freshly started `unshare --user` may take to be in its namespace.
_UNSHARE_WAIT = 5.0


def owner_as_root(uid: int, gid: int, base: int) -> int:
    """A descriptor of a user namespace whose mapping takes uid and gid to base (a
    container's root on the host): a file they own, bound idmapped with it, is the
    container root's inside. The caller closes it."""
    process = spawn(["unshare", "--user", "--", "sleep", "60"], env=base_env(),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ours = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + _UNSHARE_WAIT
        while os.readlink(f"/proc/{process.pid}/ns/user") == ours:
            if process.poll() is not None or time.monotonic() > deadline:
                raise OSError(0, "unshare did not make its user namespace")
            time.sleep(0.001)
        with open(f"/proc/{process.pid}/uid_map", "w", encoding="ascii") as stream:
            stream.write(f"{uid} {base} 1\n")
        with open(f"/proc/{process.pid}/gid_map", "w", encoding="ascii") as stream:
            stream.write(f"{gid} {base} 1\n")
        return os.open(f"/proc/{process.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"cannot make a user namespace for an idmapped mount: {exc}",
                           status=ExitStatus.LAUNCHER) from None
    finally:
        process.kill()
        process.wait()
