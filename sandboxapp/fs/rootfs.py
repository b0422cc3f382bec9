"""Looking at files inside an image from the host, resolving symlinks as the container would."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import ROOT_PATH

MAX_SYMLINKS = 40


def resolve_in_root(root: Path, path: PurePosixPath) -> Path | None:
    """The host path of `path` as seen inside `root` (absolute symlinks stay inside the root);
    None when it does not exist."""
    pending = list(path.parts[1:])
    current = PurePosixPath("/")
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        host = root / candidate.relative_to("/")
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                return None
            target = PurePosixPath(os.readlink(host))
            if target.is_absolute():
                current = PurePosixPath("/")
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        current = candidate
    return root / current.relative_to("/")


def check_command(rootfs: Path, program: str) -> None:
    """Raise 127 when the program is not in the image, 126 when it is not executable."""
    if "/" in program:
        candidates = [PurePosixPath(program)] if program.startswith("/") else []
    else:
        candidates = [PurePosixPath(d) / program for d in ROOT_PATH]
    for candidate in candidates:
        host = resolve_in_root(rootfs, candidate)
        if host is None:
            continue
        st = host.stat()
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return
        raise SandboxError(f"{program}: found in the image at {candidate}, but not executable",
                           status=ExitStatus.NOT_EXECUTABLE)
    raise SandboxError(
        f"{program}: command not found in the image",
        hint="add the package that provides it to the profile's [image] packages and rebuild",
        status=ExitStatus.NOT_FOUND,
    )
