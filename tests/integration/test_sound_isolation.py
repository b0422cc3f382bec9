"""The sound door, attacked from inside: the sandbox's socket is the launcher's filtering proxy.

From a sandbox a client of the user's server could load modules (a TCP listener, a plugin of
its own choosing) that outlive it, move or kill other programs' streams, or record. Through the
proxy: module loads are refused, on PulseAudio and on PipeWire, nothing is left behind,
recording works only with microphone = true, playback reaches the sink, garbage and oversized
packets end only the connection that sent them.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from tests.harness import SoundServer
from tests.integration.launching import (
    FULL_SANDBOX,
    NAME,
    Session,
    waiting_command,
    write_variant,
)

ATTACKS = ("pactl load-module module-null-sink sink_name=evil; echo null-sink $?; "
           "pactl load-module module-native-protocol-tcp auth-anonymous=1 port=4713; "
           "echo tcp $?; pactl unload-module 0; echo unload $?; "
           "pactl set-default-sink evil; echo default $?")


def modules(sound: SoundServer) -> list[tuple[str, str]]:
    return sorted((name, argument) for _, name, argument in sound.modules())


def test_module_loads_and_server_changes_are_refused(session: Session,
                                                     server: SoundServer) -> None:
    before = modules(server)
    profile = write_variant(session.profiles, ["/bin/sh", "-c", ATTACKS], FULL_SANDBOX)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    statuses = dict(line.split() for line in result.stdout.splitlines())
    assert statuses == {"null-sink": "1", "tcp": "1", "unload": "1", "default": "1"}, (
        result.stdout, result.stderr)
    assert result.stderr.count("Access denied") == 4, result.stderr
    assert modules(server) == before


@pytest.mark.parametrize("microphone", [False, True])
def test_recording_only_with_microphone(session: Session, microphone: bool) -> None:
    sandbox = FULL_SANDBOX + ("microphone = true\n" if microphone else "")
    profile = write_variant(session.profiles,
                            ["/bin/sh", "-c", "timeout 2 parec --raw > /root/data/recorded; "
                                              "echo $?"], sandbox)
    result = session.run(str(profile))
    assert result.returncode == 0, result.stderr
    recorded = (session.persist_dir() / "recorded").stat().st_size
    if microphone:
        assert result.stdout.strip() == "124" and recorded > 10000, (result.stdout, recorded)
    else:
        assert result.stdout.strip() != "124" and recorded == 0, (result.stdout, recorded)
        assert "Access denied" in result.stderr


def _send_raw(path: Path, data: bytes) -> bytes:
    """Send data on a connection of its own to the socket; what comes back before it ends."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def test_garbage_and_oversized_packets_end_only_their_own_connection(session: Session) -> None:
    profile = write_variant(session.profiles, waiting_command(), FULL_SANDBOX)
    with session.running(profile):
        proxy = session.run_dir / "sound" / NAME / "native"
        assert proxy.is_socket()
        started = time.monotonic()
        # Not a packet at all; a length of 4 GiB; a command before the handshake; audio data
        # claiming shared memory.
        for attack in (b"\xff" * 4096,
                       struct.pack(">IIIII", 0xFFFFFFF0, 0xFFFFFFFF, 0, 0, 0) + b"x" * 1000,
                       struct.pack(">IIIII", 10, 0xFFFFFFFF, 0, 0, 0)
                       + b"L" + struct.pack(">I", 51) + b"L" + struct.pack(">I", 1),
                       struct.pack(">IIIII", 4, 0, 0, 0, 0x80000000) + b"abcd"):
            assert _send_raw(proxy, attack) == b""
        assert time.monotonic() - started < 10
        # The sandbox's own clients still get through.
        check = write_variant(session.profiles, ["pactl", "info"], FULL_SANDBOX)
        joined = session.run(str(check))
        assert joined.returncode == 0, joined.stderr
        assert "Server String: unix:/run/sandboxapp/pulse/native" in joined.stdout
