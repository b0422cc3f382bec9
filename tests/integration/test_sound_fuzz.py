"""The sound proxy fuzzed, against a PulseAudio that loads what a Debian desktop's does and
against PipeWire's pulse server.

Real clients' sessions are recorded first (paplay, pactl, parec, and pacat with the properties
Firefox's sound library sets), packet by packet. Then thousands of seeded mutations of them
(values changed in type or range, property lists given the keys that make servers act,
commands swapped, tags reused, audio at odd offsets, seeks, channels and lengths, packets
dropped, repeated, cut short, bits flipped) are replayed to the proxy, which runs in a process
of its own, each session bounded in time. Between the proxy and the server a tap keeps what the
proxy sent: nothing outside the allowed set may be in it. The server stays up and loads no
module, the proxy never hangs, and its memory and threads stay flat.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandboxapp.host import pulsewire
from sandboxapp.host.pulsewire import (
    CONTROL_CHANNEL,
    DESCRIPTOR,
    Command,
    FormatInfo,
    PulseError,
    Value,
)
from sandboxapp.host.soundfilter import (
    _PLAYBACK,
    _RECORDING,
    CLIENT_PROPERTIES,
    FORMAT_PROPERTIES,
    IDENTITY,
    PCM,
    RESTORE_ID,
    STREAM_PROPERTIES,
)
from tests.harness import (
    TEST_MICROPHONE,
    TEST_SINK,
    ServerWatch,
    SoundServer,
    pipewire_server,
    sound_server,
    write_tone,
)
from tests.integration.conftest import REPO

SESSIONS = 1500  # per server
SEED = 20261203
# A session's packets, its requests' answers awaited, then its end: never longer than this.
SESSION_SECONDS = 10.0
# How long a replayed request waits for its answer (a drain's comes when playback ends).
ANSWER_WAIT = 0.3
ALLOWED_COMMANDS = {Command.AUTH, *_PLAYBACK, *_RECORDING}
ALLOWED_KEYS = CLIENT_PROPERTIES | STREAM_PROPERTIES | {IDENTITY, RESTORE_ID}
# The proxy's own connection, on which it asks which source a record stream names: it asks,
# and changes nothing.
LOOKUP_NAME = b"sandboxapp\0"
LOOKUP_COMMANDS = {Command.AUTH, Command.SET_CLIENT_NAME, Command.GET_SOURCE_INFO}
DANGEROUS = pulsewire.proplist({
    "filter.apply": "ladspa-sink",
    "filter.apply.ladspa-sink.parameters": "plugin=/nonexistent/evil.so label=x",
    "filter.want": "echo-cancel", "media.role": "phone",
    "module-stream-restore.id": "sink-input-by-media-role:music",
    "target.object": f"{TEST_SINK}.monitor", "node.target": "0",
    "stream.capture.sink": "true", "pipewire.access": "unrestricted",
    "application.process.binary": "../../../../etc/passwd"})
NUMBERS = (0, 1, 2, 5, 255, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
Packet = tuple[bytes, bytes]


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError()
        data += chunk
    return data


class Tap:
    """A socket in front of the server that passes everything both ways and keeps what its
    clients sent, packet by packet, one list per connection."""

    def __init__(self, path: Path, server: Path) -> None:
        self.path, self.server = path, server
        self.sessions: list[list[Packet]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.server))
            kept: list[Packet] = []
            self.sessions.append(kept)
            threading.Thread(target=self._client, args=(client, upstream, kept),
                             daemon=True).start()
            threading.Thread(target=self._back, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _client(client: socket.socket, upstream: socket.socket, kept: list[Packet]) -> None:
        with contextlib.suppress(OSError):
            while True:
                head = _exactly(client, 20)
                payload = _exactly(client, DESCRIPTOR.unpack(head)[0])
                kept.append((head, payload))
                upstream.sendall(head + payload)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _back(upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(1 << 16):
                client.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def record_sessions(server: SoundServer, workdir: Path) -> list[list[Packet]]:
    """Real clients' sessions, as they reach a server."""
    tap = Tap(workdir / "record-tap", server.socket)
    tone = workdir / "tone.wav"
    write_tone(tone, seconds=0.3)
    # As in the sandbox: no shared memory (its descriptors would not pass the tap either).
    conf = workdir / "client.conf"
    conf.write_text("autospawn = no\nenable-shm = no\n")
    env = {**server.client_env(), "PULSE_SERVER": f"unix:{tap.path}",
           "PULSE_CLIENTCONFIG": str(conf)}
    firefox_like = {**env, "PULSE_PROP": "application.name=Firefox "
                    "application.icon_name=firefox-esr media.role=music"}
    # (argv, environment, seconds): a desktop's null sink takes a second or two to start
    # playing after it was idle.
    commands = [
        (["paplay", str(tone)], env, 4),
        (["pactl", "info"], env, 1),
        (["pactl", "list", "sinks"], env, 1),
        (["pactl", "list", "sources"], env, 1),
        (["pactl", "load-module", "module-null-sink"], env, 1),
        (["pactl", "subscribe"], env, 1),
        (["parec", "--raw", "-d", TEST_MICROPHONE], env, 2),
        (["pacat", "--playback", "--raw", "--format=float32le", "--channels=2",
          "--rate=48000", "--stream-name=AudioStream", "--latency-msec=40",
          "--property=media.name=AudioStream", "/dev/zero"], firefox_like, 3),
    ]
    for argv, environ, seconds in commands:
        subprocess.run(["timeout", str(seconds), *argv], env=environ, capture_output=True,
                       check=False)
    time.sleep(0.3)
    tap.close()
    sessions = [session for session in tap.sessions if session]
    assert len(sessions) >= len(commands), [len(s) for s in tap.sessions]
    commands_seen = {pulsewire.command_and_tag(payload)[0]  # type: ignore[index]
                     for session in sessions for head, payload in session
                     if DESCRIPTOR.unpack(head)[1] == CONTROL_CHANNEL}
    audio = sum(1 for session in sessions for head, _ in session
                if DESCRIPTOR.unpack(head)[1] != CONTROL_CHANNEL)
    # The seeds are whole sessions: streams made, played, recorded.
    assert {Command.CREATE_PLAYBACK_STREAM, Command.CREATE_RECORD_STREAM,
            Command.GET_SINK_INFO_LIST, Command.SUBSCRIBE} <= commands_seen, commands_seen
    assert audio > 3, audio
    return sessions


def _random_value(rng: random.Random) -> Value:
    choice = rng.randrange(10)
    if choice == 0:
        return rng.choice(NUMBERS)
    if choice == 1:
        return None
    if choice == 2:
        return rng.random() < 0.5
    if choice == 3:
        return rng.choice(["", "@DEFAULT_MONITOR@", f"{TEST_SINK}.monitor", TEST_SINK,
                           "x" * 3000, "module-ladspa-sink"])
    if choice == 4:
        return DANGEROUS
    if choice == 5:
        return FormatInfo(rng.randrange(8), DANGEROUS)
    if choice == 6:
        return pulsewire.SampleSpec(rng.randrange(20), rng.choice((0, 1, 2, 33, 255)),
                                    rng.choice(NUMBERS))
    if choice == 7:
        return pulsewire.U8(rng.randrange(256))
    if choice == 8:
        return pulsewire.ChannelVolumes(tuple(rng.choice(NUMBERS)
                                              for _ in range(rng.randrange(4))))
    return pulsewire.Arbitrary(rng.randbytes(rng.randrange(16)))


def _with_values(head: bytes, values: list[Value]) -> Packet:
    payload = pulsewire.encode(values)
    fields = DESCRIPTOR.unpack(head)
    return DESCRIPTOR.pack(len(payload), *fields[1:]), payload


def _mutate_one(rng: random.Random, packets: list[Packet]) -> None:
    index = rng.randrange(1, len(packets)) if len(packets) > 1 else 0
    head, payload = packets[index]
    channel = DESCRIPTOR.unpack(head)[1]
    values: list[Value] | None = None
    if channel == CONTROL_CHANNEL:
        with contextlib.suppress(PulseError):
            values = pulsewire.decode(payload)
    operation = rng.randrange(9)
    if operation == 0 and values and len(values) > 2:
        values[rng.randrange(2, len(values))] = _random_value(rng)
        packets[index] = _with_values(head, values)
    elif operation == 1 and values:
        changed = [value + DANGEROUS if isinstance(value, tuple) else
                   FormatInfo(value.encoding, value.properties + DANGEROUS)
                   if isinstance(value, FormatInfo) else value for value in values]
        packets[index] = _with_values(head, changed)
    elif operation == 2 and values:
        values[0] = rng.randrange(110)
        packets[index] = _with_values(head, values)
    elif operation == 3 and values and index > 1:
        earlier = packets[rng.randrange(1, index)]
        with contextlib.suppress(PulseError, IndexError):
            values[1] = pulsewire.decode(earlier[1])[1]
            packets[index] = _with_values(head, values)
    elif operation == 4:
        fields = list(DESCRIPTOR.unpack(head))
        fields[rng.randrange(1, 5)] = rng.choice((*NUMBERS, rng.getrandbits(32)))
        packets[index] = (DESCRIPTOR.pack(*fields), payload)
    elif operation == 5 and payload:
        cut = rng.randrange(len(payload))
        packets[index] = (DESCRIPTOR.pack(cut, *DESCRIPTOR.unpack(head)[1:])
                          if rng.random() < 0.5 else head, payload[:cut])
    elif operation == 6 and payload:
        data = bytearray(payload)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        packets[index] = (head, bytes(data))
    elif operation == 7:
        packets.insert(index, packets[rng.randrange(len(packets))])
    elif len(packets) > 1:
        del packets[index]


def mutated(rng: random.Random, session: list[Packet]) -> list[Packet]:
    packets = list(session)
    for _ in range(rng.randrange(1, 5)):
        _mutate_one(rng, packets)
    return packets


class _Answers:
    """What comes back on a replayed session: the tags answered, and its end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tags: set[int] = set()
        self.ended = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                head = _exactly(self.sock, 20)
                payload = _exactly(self.sock, DESCRIPTOR.unpack(head)[0])
                found = pulsewire.command_and_tag(payload)
                if found is not None and found[0] in (Command.REPLY, Command.ERROR):
                    with self.changed:
                        self.tags.add(found[1])
                        self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait(self, tag: int, seconds: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: tag in self.tags or self.ended, seconds)


def replay(path: Path, packets: list[Packet]) -> float:
    """Send a session to the proxy as a client does: each request then (for a moment) its
    answer, as libpulse waits for a stream's channel before it writes to it; audio at once.
    Then hang up; how long until the proxy had closed its side too (infinite: it never
    did)."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SESSION_SECONDS)
        try:
            sock.connect(str(path))
            answers = _Answers(sock)
            for head, payload in packets:
                sock.sendall(head + payload)
                found = pulsewire.command_and_tag(payload)
                if DESCRIPTOR.unpack(head)[1] == CONTROL_CHANNEL and found is not None:
                    answers.wait(found[1], ANSWER_WAIT)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except TimeoutError:
            return float("inf")
        with answers.changed:
            if not answers.changed.wait_for(lambda: answers.ended, SESSION_SECONDS):
                return float("inf")
    return time.monotonic() - started


def _is_lookup(session: list[Packet]) -> bool:
    """The proxy's own connection names itself "sandboxapp" and carries no sandbox's
    identity; one it relays for a sandbox always does."""
    for head, payload in session:
        if DESCRIPTOR.unpack(head)[1] != CONTROL_CHANNEL:
            continue
        with contextlib.suppress(PulseError):
            values = pulsewire.decode(payload)
            if values[0] == Command.SET_CLIENT_NAME and isinstance(values[2], tuple):
                properties = dict(values[2])
                return (properties.get("application.name") == LOOKUP_NAME
                        and IDENTITY not in properties)
    return False


def check_what_reached_the_server(sessions: list[list[Packet]]) -> tuple[int, int]:
    """Every packet the proxy sent for a sandbox is in the allowed set, and its own lookups
    only ask; how many packets it relayed, and how many lookups it asked."""
    count = lookups = 0
    for session in sessions:
        if _is_lookup(session):
            for head, payload in session:
                assert DESCRIPTOR.unpack(head)[1] == CONTROL_CHANNEL, head
                command = pulsewire.decode(payload)[0]
                assert command in LOOKUP_COMMANDS, command
                lookups += command == Command.GET_SOURCE_INFO
            continue
        for head, payload in session:
            count += 1
            _, channel, offset_high, offset_low, flags = DESCRIPTOR.unpack(head)
            if channel != CONTROL_CHANNEL:
                assert (offset_high, offset_low, flags) == (0, 0, 0), head
                continue
            values = pulsewire.decode(payload)
            assert values[0] in ALLOWED_COMMANDS, values
            for value in values:
                if isinstance(value, tuple):
                    assert {key for key, _ in value} <= ALLOWED_KEYS, value
                if isinstance(value, FormatInfo):
                    assert value.encoding == PCM
                    assert {key for key, _ in value.properties} <= FORMAT_PROPERTIES
    return count, lookups


@contextlib.contextmanager
def proxy_process(socket_path: Path, server: Path, sound: SoundServer,
                  workdir: Path) -> Iterator[psutil.Process]:
    """The proxy in a process of its own, serving socket_path for the server at server (the
    tap), a client of the user's sound server as the launcher is."""
    cookie_file = workdir / "cookie"
    cookie_file.write_bytes(pulsewire.read_cookie(sound.client_env()))
    # The tap passes bytes, not descriptors: the proxy's own libpulse connection shares no
    # memory with the server here.
    client_config = workdir / "client.conf"
    client_config.write_text("enable-shm = no\nenable-memfd = no\n")
    environment = {**sound.client_env(), "PULSE_CLIENTCONFIG": str(client_config)}
    del environment["PULSE_SERVER"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.proxy_process", str(socket_path),
         str(server), str(cookie_file)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield psutil.Process(process.pid)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


@pytest.fixture(params=["pulseaudio", "pipewire"])
def fuzzed_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SoundServer]:
    maker = sound_server if request.param == "pulseaudio" else pipewire_server
    with maker(tmp_path) as server:
        yield server


def test_thousands_of_mutated_sessions_reach_the_server_only_as_allowed(
        fuzzed_server: SoundServer, tmp_path: Path) -> None:
    server = fuzzed_server
    seeds = record_sessions(server, tmp_path)
    modules_before = sorted((name, argument) for _, name, argument in server.modules())
    tap = Tap(tmp_path / "check-tap", server.socket)
    proxy_socket = tmp_path / "proxy"
    rng = random.Random(SEED)
    durations = []
    with ServerWatch(server) as watch, proxy_process(
            proxy_socket, tap.path, server, tmp_path) as proxy:
        threads_at_start = proxy.num_threads()
        for number in range(SESSIONS):
            durations.append(replay(proxy_socket, mutated(rng, rng.choice(seeds))))
            if number == SESSIONS // 5:
                memory_warm = proxy.memory_info().rss
        memory_end = proxy.memory_info().rss
        deadline = time.monotonic() + 10
        while proxy.num_threads() > threads_at_start and time.monotonic() < deadline:
            time.sleep(0.1)
        threads_end = proxy.num_threads()
        # A real client still gets through, at once.
        info = subprocess.run(["pactl", "info"], capture_output=True, text=True, timeout=10,
                              env={**server.client_env(), "PULSE_SERVER": f"unix:{proxy_socket}"})
        time.sleep(2)
    assert info.returncode == 0, info.stderr
    assert max(durations) < SESSION_SECONDS, sorted(durations)[-5:]
    assert threads_end <= threads_at_start
    assert memory_end - memory_warm < 8 << 20, (memory_warm, memory_end)
    assert server.process.poll() is None and server.answers()
    assert watch.modules_loaded() == []
    assert sorted((name, argument) for _, name, argument in server.modules()) == modules_before
    reached, lookups = check_what_reached_the_server(tap.sessions)
    assert reached > SESSIONS, reached  # the fuzzing got past the handshake
    assert lookups > 0  # and to the recording streams' sources
    tap.close()
