"""The local stream sockets a launch speaks to the user's X and sound servers over."""

from __future__ import annotations

import socket
from pathlib import Path

# A local server that takes longer than this to answer is hung, not busy.
TIMEOUT = 5.0


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """size bytes, however the kernel splits them; ConnectionError when the server hangs up."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 16))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
