"""The sound proxy's filter, packet by packet, over socket pairs (no sound server)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from sandboxapp.host import soundproxy, unixsocket
from sandboxapp.host.soundproxy import CONTROL, MAX_PACKET, Refused, _Connection

COOKIE = bytes(range(256))


def u32(value: int) -> bytes:
    return b"L" + struct.pack(">I", value)


def packet(payload: bytes, channel: int = CONTROL, flags: int = 0) -> bytes:
    return struct.pack(">IIIII", len(payload), channel, 0, 0, flags) + payload


def command(number: int, tag: int, *args: bytes) -> bytes:
    return packet(u32(number) + u32(tag) + b"".join(args))


def auth(tag: int = 1, version: int = 0x80000000 | 0x40000000 | 35) -> bytes:
    return command(8, tag, u32(version), b"x" + struct.pack(">I", 256) + bytes(256))


def read(sock: socket.socket) -> tuple[int, int, bytes]:
    sock.settimeout(2)
    head = unixsocket.recv_exactly(sock, 20, None)
    length, channel, _, _, flags = struct.unpack(">IIIII", head)
    return channel, flags, unixsocket.recv_exactly(sock, length, None)


class Pair:
    """A connection of the proxy's with its two far ends: the sandbox's and the server's."""

    def __init__(self, recording: bool = False) -> None:
        self.sandbox, client = socket.socketpair()
        server, self.server = socket.socketpair()
        self.connection = _Connection(client, server, recording)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.connection.from_client(COOKIE)
        except BaseException as exc:  # kept for the test to look at
            self.error = exc

    def ended(self) -> BaseException | None:
        self.thread.join(timeout=2)
        assert not self.thread.is_alive()
        return self.error


def _quietly(pump: Callable[[], None]) -> None:
    with contextlib.suppress(OSError, Refused):
        pump()  # until the test closes the sockets


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.connection.close()
    made.sandbox.close()
    made.server.close()


def test_the_handshake_goes_with_the_users_cookie_and_no_shared_memory(pair: Pair) -> None:
    pair.sandbox.sendall(auth())
    channel, _, payload = read(pair.server)
    assert channel == CONTROL
    assert payload[:10] == u32(8) + u32(1)
    assert payload[10:15] == u32(35)  # the version, without the shm and memfd flags
    assert payload[15:] == b"x" + struct.pack(">I", 256) + COOKIE


def test_a_module_load_is_answered_access_denied_and_never_reaches_the_server(
        pair: Pair) -> None:
    pair.sandbox.sendall(auth())
    read(pair.server)
    pair.sandbox.sendall(command(51, 7, b"tmodule-null-sink\0", b"t\0"))
    _, _, answer = read(pair.sandbox)
    assert answer == u32(0) + u32(7) + u32(soundproxy.ACCESS_DENIED)
    # What a player asks goes through.
    pair.sandbox.sendall(command(20, 8))
    _, _, forwarded = read(pair.server)
    assert forwarded == u32(20) + u32(8)


@pytest.mark.parametrize("recording", [False, True])
def test_recording_is_refused_unless_the_profile_allows_it(recording: bool) -> None:
    made = Pair(recording)
    try:
        made.sandbox.sendall(auth())
        read(made.server)
        made.sandbox.sendall(command(5, 9, b"tx\0"))
        sock = made.server if recording else made.sandbox
        _, _, payload = read(sock)
        assert payload[:10] == (u32(5) + u32(9) if recording else u32(0) + u32(9))
    finally:
        made.connection.close()


def test_only_its_own_streams_volume_may_be_set(pair: Pair) -> None:
    pair.sandbox.sendall(auth())
    read(pair.server)
    pair.sandbox.sendall(command(37, 10, u32(42)))
    assert read(pair.sandbox)[2] == u32(0) + u32(10) + u32(soundproxy.ACCESS_DENIED)
    # The server's reply to its stream's creation names its sink input: that one it may set.
    pair.sandbox.sendall(command(3, 11, b"tstream\0"))
    read(pair.server)
    threading.Thread(target=_quietly, args=(pair.connection.from_server,), daemon=True).start()
    pair.server.sendall(packet(u32(2) + u32(11) + u32(0) + u32(42)))
    read(pair.sandbox)
    pair.sandbox.sendall(command(37, 12, u32(42)))
    assert read(pair.server)[2][:10] == u32(37) + u32(12)


@pytest.mark.parametrize("attack", [
    command(20, 1),                                                 # before the handshake
    struct.pack(">IIIII", MAX_PACKET + 1, CONTROL, 0, 0, 0),        # too large
    packet(b"\xff" * 30),                                           # not a command
    auth() + auth(2),                                               # a second handshake
    auth() + packet(b"abcd", channel=0, flags=0x80000000),          # shared memory
], ids=["early", "oversized", "garbage", "second-handshake", "shared-memory"])
def test_a_broken_protocol_ends_the_connection(pair: Pair, attack: bytes) -> None:
    pair.sandbox.sendall(attack)
    assert isinstance(pair.ended(), Refused)
