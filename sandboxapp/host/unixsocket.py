"""The local stream sockets a launch speaks to the user's X and sound servers over.

What comes back is not trusted: a socket at a display's or sound server's path may be served by
any local program (root's `cleanup` connects to the paths a record names). So every exchange has
a deadline, and every read a size the caller has bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from pathlib import Path

from sandboxapp.fs.safepath import DesktopUser, open_user_path, refuse

# A local server that takes longer than this to answer a request is hung, not busy.
TIMEOUT = 5.0


class ProtocolError(OSError):
    """The server's answer was malformed, too large or too late."""


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def deadline() -> float:
    """The time by which the answer to a request that starts now must have come."""
    return time.monotonic() + TIMEOUT


def recv_exactly(sock: socket.socket, size: int, by: float | None) -> bytes:
    """size bytes, however the kernel splits them, before the monotonic time `by` (None: as
    long as the socket waits, for a stream that may rightly be idle); ConnectionError when the
    other end hangs up, ProtocolError when it is too slow."""
    chunks = []
    try:
        while size:
            if by is not None:
                left = by - time.monotonic()
                if left <= 0:
                    raise ProtocolError(f"the server did not answer within {TIMEOUT:g} s")
                sock.settimeout(left)
            try:
                chunk = sock.recv(min(size, 1 << 16))
            except TimeoutError:
                raise ProtocolError(f"the server did not answer within {TIMEOUT:g} s") from None
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
    finally:
        if by is not None:
            sock.settimeout(TIMEOUT)  # for the requests that follow
    return b"".join(chunks)


class SandboxListener:
    """A listening socket the launcher serves a sandbox on, at path in the sandbox's own
    directory (the user's, 0711), which is the barrier: the container's processes are nobody
    here. Root acting for the user makes, opens up (0666) and removes it through that
    directory as opened without following the user's symlinks: never anywhere else, whatever
    the user swaps meanwhile.

    user: the directory's owner (the process's own user where None)."""

    def __init__(self, path: Path, backlog: int, user: DesktopUser | None = None) -> None:
        self.name = path.name
        self.held = open_user_path(path.parent, user or DesktopUser(os.getuid(), os.getgid()))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.held)
            self.sock.bind(f"/proc/self/fd/{self.held}/{self.name}")
            # What was just made, opened without following a symlink swapped in for it: only
            # a socket is opened up, through that descriptor.
            made = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=self.held)
            try:
                if not stat.S_ISSOCK(os.fstat(made).st_mode):
                    raise refuse(path, "it was replaced while it was made")
                os.chmod(f"/proc/self/fd/{made}", 0o666)
            finally:
                os.close(made)
            self.sock.listen(backlog)
        except BaseException:
            self.sock.close()
            os.close(self.held)
            raise

    def accept(self) -> tuple[socket.socket, object]:
        return self.sock.accept()

    def close(self) -> None:
        """Stop serving: the accepting thread wakes, and the socket's name goes."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.held)
        os.close(self.held)
