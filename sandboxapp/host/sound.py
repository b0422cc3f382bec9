"""Sound for a sandbox: where its socket and client configuration live, and how the user's
server is found. The socket itself is served by the launcher: soundproxy.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# In a sandbox's sound directory: its client configuration and its own socket.
SOUND_CONF = "client.conf"
SOUND_SOCKET = "native"
SOUND_DIR_MODE = 0o711


@dataclass(frozen=True)
class SoundPaths:
    """A sandbox's sound directory on the host: its client configuration, and its own socket
    once the launcher serves it (soundproxy.py)."""

    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / SOUND_CONF

    @property
    def socket(self) -> Path:
        return self.dir / SOUND_SOCKET


@dataclass(frozen=True)
class SoundServerAddress:
    """The user's sound server, as the user's own clients find it."""

    socket: Path

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SoundServerAddress | None:
        server = environ.get("PULSE_SERVER", "")
        for word in server.split():
            if word.startswith("unix:"):
                return cls(Path(word.removeprefix("unix:")))
            if word.startswith("/"):
                return cls(Path(word))
        if server:
            return None  # a TCP server: nothing we could bind into a sandbox
        runtime = environ.get("XDG_RUNTIME_DIR")
        return cls(Path(runtime) / "pulse" / "native") if runtime else None


def server_reachable(address: SoundServerAddress | None) -> bool:
    return address is not None and address.socket.exists() and os.access(address.socket, os.W_OK)
