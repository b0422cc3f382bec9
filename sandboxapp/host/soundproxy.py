"""The sound door: a filtering proxy between a sandbox and the user's sound server.

PulseAudio has no per-client permissions: whoever reaches a server's socket may load modules
(a TCP listener, a plugin from any path) and move or kill other programs' streams. So the
sandbox never reaches the server. It gets a socket of its own that the launcher serves while the
app runs; each connection there becomes one connection of the launcher's to the user's server
(PulseAudio, or PipeWire's pulse server), with the user's cookie and credentials, and only what
a player needs goes through: its client properties, server, sink and source information, its
own playback streams (create, write, drain, cork, flush, delete, their volume), and recording
only where the profile says `microphone = true`. Everything else is answered "access denied".
Shared memory is never offered (the handshake's flags are cleared, ancillary data is not passed
on), every packet has a bounded size, and when the app exits the proxy closes: the sandbox's
streams end at once.

The protocol (pulsecore/pstream.c, tagstruct.c): each packet is a 20-byte descriptor (length,
channel, offset high and low, flags; big-endian) and its payload; control packets (channel
0xFFFFFFFF) are tagstructs beginning with a command and a tag.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandboxapp.host import pulsewire, unixsocket

CONTROL = 0xFFFFFFFF
# Larger than any packet a player sends (libpulse's memblocks are 64 KiB); larger is an attack.
MAX_PACKET = 1 << 20
MAX_CONNECTIONS = 16
ACCESS_DENIED = 1
# The handshake's version word: the low 16 bits; the high ones offer shared memory and memfd.
VERSION_MASK = 0xFFFF

# Commands (pulsecore/native-common.h).
AUTH, SET_CLIENT_NAME = 8, 9
CREATE_PLAYBACK_STREAM = 3
SET_SINK_INPUT_VOLUME, SET_SINK_INPUT_MUTE = 37, 69

# What a player may ask: the client's own properties; information about the server, its sinks
# and sources; its own playback streams (each addressed by a channel of this connection, which
# the server checks). The volume of a sink input is addressed by its global index: only those
# of the connection's own streams are let through.
PLAYBACK = frozenset({
    SET_CLIENT_NAME, 82, 85,          # client proplist: set, update, remove
    10, 11, 13, 20, 21, 22, 23, 24,   # lookup sink/source, stat, server/sink/source info
    35,                               # subscribe (to events: indices, no contents)
    CREATE_PLAYBACK_STREAM, 4, 12, 14, 41, 42, 43, 46, 60, 72, 74, 81, 84,
    SET_SINK_INPUT_VOLUME, SET_SINK_INPUT_MUTE,
})
# Recording, for profiles with microphone = true: its own record streams only.
RECORDING = frozenset({5, 6, 57, 58, 59, 47, 73, 75, 80, 83})


class Refused(Exception):
    """The connection is closed: the sandbox broke the protocol or a limit."""


def _read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    """(descriptor, payload) of the next packet; ConnectionError at the end."""
    head = unixsocket.recv_exactly(sock, 20, None)
    (length,) = struct.unpack_from(">I", head)
    if length > MAX_PACKET:
        raise Refused(f"a packet of {length} bytes")
    return head, unixsocket.recv_exactly(sock, length, None)


def _u32_at(payload: bytes, offset: int) -> int | None:
    """The tagstruct u32 ('L' and four bytes) at offset, or None where there is none."""
    if len(payload) < offset + 5 or payload[offset] != ord("L"):
        return None
    return int(struct.unpack_from(">I", payload, offset + 1)[0])


def _error_packet(tag: int, code: int) -> bytes:
    payload = (b"L" + struct.pack(">I", pulsewire.ERROR) + b"L" + struct.pack(">I", tag)
               + b"L" + struct.pack(">I", code))
    return struct.pack(">IIIII", len(payload), CONTROL, 0, 0, 0) + payload


@dataclass
class _Connection:
    """One sandbox client and the launcher's connection for it to the user's server."""

    client: socket.socket
    server: socket.socket
    recording: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending_streams: set[int] = field(default_factory=set)  # tags of CREATE_PLAYBACK_STREAM
    own_inputs: set[int] = field(default_factory=set)  # the sink inputs of its streams

    def send_client(self, data: bytes) -> None:
        with self.lock:
            self.client.sendall(data)

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- the sandbox's packets ---------------------------------------------------------------

    def from_client(self, cookie: bytes) -> None:
        authenticated = False
        while True:
            head, payload = _read_packet(self.client)
            _, channel, _, _, flags = struct.unpack(">IIIII", head)
            if channel != CONTROL:
                # Audio for one of its streams; the server checks that the channel is this
                # connection's. Shared-memory references (flag bits) were never agreed on.
                if not authenticated or flags & 0xFF000000:
                    raise Refused("audio data before the handshake, or shared memory")
                self.server.sendall(head + payload)
                continue
            command, tag = _u32_at(payload, 0), _u32_at(payload, 5)
            if command is None or tag is None:
                raise Refused("a command that is not one")
            if command == AUTH:
                if authenticated:
                    raise Refused("a second handshake")
                self._authenticate(payload, tag, cookie)
                authenticated = True
            elif not authenticated:
                raise Refused("a command before the handshake")
            elif self._allowed(command, payload):
                if command == CREATE_PLAYBACK_STREAM:
                    with self.lock:
                        self.pending_streams.add(tag)
                self.server.sendall(head + payload)
            else:
                self.send_client(_error_packet(tag, ACCESS_DENIED))

    def _authenticate(self, payload: bytes, tag: int, cookie: bytes) -> None:
        version = _u32_at(payload, 10)
        if version is None:
            raise Refused("a handshake without a version")
        packet = (pulsewire.Writer().u32(AUTH).u32(tag).u32(version & VERSION_MASK)
                  .arbitrary(cookie).packet())
        creds = struct.pack("=iII", os.getpid(), os.getuid(), os.getgid())
        self.server.sendmsg([packet], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])

    def _allowed(self, command: int, payload: bytes) -> bool:
        if command in (SET_SINK_INPUT_VOLUME, SET_SINK_INPUT_MUTE):
            index = _u32_at(payload, 10)
            with self.lock:
                return index is not None and index in self.own_inputs
        return command in PLAYBACK or (self.recording and command in RECORDING)

    # -- the server's packets ----------------------------------------------------------------

    def from_server(self) -> None:
        while True:
            head, payload = _read_packet(self.server)
            _, channel, _, _, _ = struct.unpack(">IIIII", head)
            if channel == CONTROL and _u32_at(payload, 0) == pulsewire.REPLY:
                tag = _u32_at(payload, 5)
                with self.lock:
                    created = tag in self.pending_streams
                    self.pending_streams.discard(tag if tag is not None else -1)
                # The reply to its CREATE_PLAYBACK_STREAM: channel, then the sink input.
                sink_input = _u32_at(payload, 15) if created else None
                if sink_input is not None:
                    with self.lock:
                        self.own_inputs.add(sink_input)
            self.send_client(head + payload)


class SoundProxy:
    """Serves a sandbox's sound socket until closed."""

    def __init__(self, path: Path, server: Path, cookie: bytes, *, recording: bool) -> None:
        self.path = path
        self.server = server
        self.cookie = cookie
        self.recording = recording
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.listener.bind(str(path))
        # The container's processes are nobody here: the directory (0711) is the barrier.
        os.chmod(path, 0o666)
        self.listener.listen(MAX_CONNECTIONS)
        self.connections: list[_Connection] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="sound proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                live = [c for c in self.connections if c.client.fileno() >= 0]
                self.connections = live
                if self.closed or len(live) >= MAX_CONNECTIONS:
                    client.close()
                    continue
            try:
                upstream = socket.socket(socket.AF_UNIX,
                                         socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                upstream.connect(str(self.server))
            except OSError:
                client.close()
                continue
            connection = _Connection(client, upstream, self.recording)
            with self.lock:
                self.connections.append(connection)
            threading.Thread(target=self._pump, args=(connection, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(connection, False), daemon=True).start()

    def _pump(self, connection: _Connection, from_client: bool) -> None:
        try:
            if from_client:
                connection.from_client(self.cookie)
            else:
                connection.from_server()
        except (OSError, Refused, ValueError, struct.error):
            pass
        finally:
            connection.close()

    def close(self) -> None:
        """Stop serving, and end every connection (the sandbox's streams end with them)."""
        with self.lock:
            self.closed = True
            connections = list(self.connections)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in connections:
            connection.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def serving(path: Path, server: Path, cookie: bytes, *, recording: bool) -> Iterator[SoundProxy]:
    proxy = SoundProxy(path, server, cookie, recording=recording)
    try:
        yield proxy
    finally:
        proxy.close()
