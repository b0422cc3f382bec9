"""Files handed to a running sandbox: the root side binds each one, as the very file the user
opened, read-only and idmapped into the container, and nothing beside it.

The layer's `files` directory is a shared mount point, bound read-only into the container at
FILES_CONTAINER_DIR through nspawn's mount namespace, which is its slave
(system/containertree.py's unshare): a file bound below it on the host reaches the container
by propagation, and a mount that reaches a mount namespace of a less privileged user
namespace so is locked read-only there: the container's root can neither make it writable nor
bind it writable elsewhere. (A file handed at the start is bound before the container's
namespace is made, and cannot be unmounted there either; one handed later can be: the sandbox
then sees the empty, read-only, root-owned file it was bound on, and hides the user's file
only from itself.) Each file gets a directory of its own, so two files of one name never
meet, and its owner on the host is the container's root on that bind (rootidmap's way), so
that a file only its owner may read is readable inside. Everything here is below the layer:
the layer's removal unmounts it.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path, PurePosixPath

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.mounts import make_shared_mount_point, mount_readonly_idmapped
from sandboxapp.system.idmapns import owner_as_root

# Handed files are bound here in the container, each in a directory of its own.
FILES_CONTAINER_DIR = PurePosixPath("/run/sandboxapp/files")
MAX_NAME = 255


def cannot_hand(what: Path | str, why: str, status: ExitStatus = ExitStatus.LAUNCHER,
                hint: str | None = None) -> SandboxError:
    """What a file the user hands the sandbox meets, said of it (its path, or its name)."""
    return SandboxError(f"cannot hand {what} to the sandbox: {why}", hint=hint, status=status)


def handed_name(name: str) -> str:
    """A file's name as the sandbox sees it: its own, where that is a file name in UTF-8 (the
    control channel and the portal's answers carry it as text)."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise SandboxError(f"a handed file's name is not UTF-8: {name[:40]!r}",
                           hint="rename the file", status=ExitStatus.USAGE) from None
    if not name or name in (".", "..") or "/" in name or "\0" in name or size > MAX_NAME:
        raise SandboxError(f"a handed file's name is not a file name: {name[:40]!r}",
                           status=ExitStatus.USAGE)
    return name


# Files one launch may be handed: each is a mount, which costs the kernel, and the user picks
# them one by one.
MAX_HANDED = 1024


class HandedFiles:
    """The root side's: a launch's files directory, and what was handed into it."""

    def __init__(self, layer: Path, base: int) -> None:
        self.directory = layer / "files"
        self.base = base  # the container's root on the host
        self.count = 0
        self._namespaces: dict[tuple[int, int], int] = {}

    def prepare(self) -> Path:
        """Before the container starts: the directory it binds."""
        self.directory.mkdir(mode=0o755)
        make_shared_mount_point(str(self.directory))
        return self.directory

    def hand(self, fd: int, name: str) -> PurePosixPath:
        """Bind the file open (for reading) as fd; its path inside. fd is the user's: a file
        they could open for reading, never a path root would open for them."""
        name = handed_name(name)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SandboxError(f"{name} is not a regular file: only files are handed to a "
                               "sandbox", status=ExitStatus.USAGE)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & os.O_PATH or flags & os.O_ACCMODE != os.O_RDONLY:
            raise SandboxError(f"{name} was not opened for reading", status=ExitStatus.USAGE)
        if self.count >= MAX_HANDED:
            raise SandboxError(f"this sandbox was handed {MAX_HANDED} files already",
                               hint="start it again to hand it more", status=ExitStatus.USAGE)
        # The next number nobody took: another root side (a join's) may hand this sandbox
        # files too.
        while True:
            self.count += 1
            holder = self.directory / str(self.count)
            try:
                holder.mkdir(mode=0o755)
                break
            except FileExistsError:
                continue
        target = holder / name
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        owner = (st.st_uid, st.st_gid)
        if owner not in self._namespaces:
            self._namespaces[owner] = owner_as_root(*owner, self.base)
        try:
            mount_readonly_idmapped(fd, self._namespaces[owner], str(target))
        except OSError as exc:
            raise cannot_hand(name, exc.strerror or "") from None
        return FILES_CONTAINER_DIR / str(self.count) / name

    def close(self) -> None:
        for fd in self._namespaces.values():
            os.close(fd)
        self._namespaces.clear()
