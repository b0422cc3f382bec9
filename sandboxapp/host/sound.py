"""Sound for a sandbox: where its socket and client configuration live, how the user's server
is found, and undoing the per-sandbox socket module that earlier releases loaded (their launch
records may still name one). The socket itself is served by the launcher: soundproxy.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxapp.errors import SandboxError

if TYPE_CHECKING:
    from sandboxapp.host import pulsewire

MODULE = "module-native-protocol-unix"


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


class ServerGone(Exception):
    """Nobody serves the sound server's socket any more: it holds no module of ours."""


@contextlib.contextmanager
def _pulse(address: SoundServerAddress) -> Iterator[pulsewire.Connection]:
    # The protocol client loads only when an earlier release's module is to be undone.
    from sandboxapp.host import pulsewire

    try:
        connection = pulsewire.Connection(address.socket, pulsewire.read_cookie(os.environ),
                                          "sandboxapp")
    except (FileNotFoundError, ConnectionRefusedError):
        raise ServerGone() from None
    except (OSError, pulsewire.PulseError) as exc:
        raise SandboxError(f"cannot reach the sound server at {address.socket}: {exc}") from None
    try:
        yield connection
    except (OSError, pulsewire.PulseError) as exc:
        raise SandboxError(f"the sound server at {address.socket} failed: {exc}") from None
    finally:
        connection.close()


def _serves(module: pulsewire.ModuleInfo, socket: Path) -> bool:
    return module.name == MODULE and f"socket={socket}" in module.argument.split()


def unload_socket_module(address: SoundServerAddress, index: int | None, socket: Path) -> None:
    """Unload our module, checking it is still ours (an index is reused after a restart).
    Without an index (the launcher died between loading it and recording its index), the
    module that serves our socket path is the one."""
    try:
        with _pulse(address) as pulse:
            if index is None:
                for module in pulse.modules():
                    if _serves(module, socket):
                        pulse.unload_module(module.index)
                return
            found = pulse.module(index)
            if found is not None and _serves(found, socket):
                pulse.unload_module(index)
    except ServerGone:
        return  # the server ended (a logout, a restart), and its modules with it


def server_reachable(address: SoundServerAddress | None) -> bool:
    return address is not None and address.socket.exists() and os.access(address.socket, os.W_OK)
