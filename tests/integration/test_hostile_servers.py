"""Sockets at a display's or a sound server's path, served by a hostile local program.

Any user can create /tmp/.X11-unix/X<N> for a display nobody runs, and root's `cleanup`
connects to the display a launch record names; the sound proxy asks the user's server about
sources. Each fake server here answers
the way an attacker would (a length of gigabytes, an answer that never ends, a text without
its end, values nested without end); the clients must give up with a one-line error, soon, and
without holding more than a bounded amount of memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandboxapp.errors import SandboxError
from sandboxapp.host import pulsewire, unixsocket, x11
from sandboxapp.host.display import X11_SOCKET_DIR, Display
from sandboxapp.host.soundproxy import SourceLookup
from sandboxapp.system.procstat import start_ticks
from tests.integration.conftest import REPO

Serve = Callable[[socket.socket], None]


@contextlib.contextmanager
def fake_server(path: Path, serve: Serve) -> Iterator[Path]:
    """A server at path that runs serve on each connection, in a thread of its own."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_quietly, args=(serve, connection, stop),
                             daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        path.unlink(missing_ok=True)


def _serve_quietly(serve: Serve, connection: socket.socket, stop: threading.Event) -> None:
    with connection, contextlib.suppress(OSError):
        serve(connection)
        while not stop.is_set() and connection.recv(1 << 16):
            pass


def _recv(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _stream_zeros(connection: socket.socket, seconds: float = 20) -> None:
    """Send as much as the client takes, for a while: what a claimed gigabyte would be."""
    block = bytes(1 << 16)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.sendall(block)


# --- X --------------------------------------------------------------------------------------

def _x_set_up(connection: socket.socket) -> None:
    """Read a client's set-up request and accept it (a minimal success reply)."""
    head = _recv(connection, 12)
    _, _, _, name_length, data_length = struct.unpack("<BxHHHHxx", head)
    _recv(connection, name_length + (-name_length % 4) + data_length + (-data_length % 4))
    connection.sendall(struct.pack("<BxHHH", 1, 11, 0, 0))


def _x_huge_reply(connection: socket.socket) -> None:
    _x_set_up(connection)
    _recv(connection, 4)  # ListHosts
    connection.sendall(struct.pack("<BBHI24x", 1, 1, 1, 0x40000000))  # 4 GiB to follow
    _stream_zeros(connection)


def _x_silent(connection: socket.socket) -> None:
    _x_set_up(connection)
    time.sleep(30)


def _x_trickle(connection: socket.socket) -> None:
    """Events, one at a time, each well within a read's patience, never the reply."""
    _x_set_up(connection)
    for _ in range(300):
        connection.sendall(struct.pack("<BBH28x", 2, 0, 0))
        time.sleep(0.1)


def _x_short_host_list(connection: socket.socket) -> None:
    _x_set_up(connection)
    _recv(connection, 4)
    connection.sendall(struct.pack("<BBHIH22x", 1, 1, 1, 0, 5000))  # 5000 hosts, no bytes


def _x_long_refusal(connection: socket.socket) -> None:
    head = _recv(connection, 12)
    del head
    reason = (b"refused\nsandboxapp: forged line\n" * 8000)[:0xFFFF * 4]
    reason += b" " * (-len(reason) % 4)
    connection.sendall(struct.pack("<BBHHH", 0, 255, 11, 0, len(reason) // 4) + reason)


@pytest.fixture
def fake_display() -> Iterator[Callable[[Serve], Display]]:
    """A display number nobody runs, and a way to serve its socket."""
    X11_SOCKET_DIR.mkdir(mode=0o1777, exist_ok=True)
    number = next(n for n in range(700, 800) if not (X11_SOCKET_DIR / f"X{n}").exists())
    display = Display(number)
    with contextlib.ExitStack() as stack:
        def serve(how: Serve) -> Display:
            stack.enter_context(fake_server(display.socket, how))
            return display
        yield serve


@pytest.fixture
def short_patience(monkeypatch: pytest.MonkeyPatch) -> float:
    """Requests time out sooner than a launch's 5 s, so the tests are quick."""
    monkeypatch.setattr(unixsocket, "TIMEOUT", 0.5)
    return 0.5


def _one_line_error(call: Callable[[], object], *fragments: str) -> float:
    started = time.monotonic()
    with pytest.raises(SandboxError) as caught:
        call()
    took = time.monotonic() - started
    message = str(caught.value.message)
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, message
    return took


@pytest.mark.parametrize(("serve", "fragment"), [
    (_x_huge_reply, "more than a server's answer can be"),
    (_x_silent, "did not answer within"),
    (_x_trickle, "did not answer within"),
    (_x_short_host_list, "host list ended early"),
    (_x_long_refusal, "refused"),
], ids=["huge-reply", "silent", "trickle", "short-host-list", "long-refusal"])
def test_a_hostile_x_server_gets_a_one_line_error_soon(
        fake_display: Callable[[Serve], Display], short_patience: float, serve: Serve,
        fragment: str) -> None:
    display = fake_display(serve)
    access = x11.XAccess(display, None)
    took = _one_line_error(lambda: x11.cookieless_admission(access), f":{display.number}",
                           fragment)
    assert took < short_patience * 3


def test_an_xauthority_that_is_a_fifo_does_not_hang_the_client(
        fake_display: Callable[[Serve], Display], short_patience: float,
        tmp_path: Path) -> None:
    fifo = tmp_path / "Xauthority"
    os.mkfifo(fifo)
    display = fake_display(_x_silent)
    took = _one_line_error(lambda: x11.cookieless_admission(x11.XAccess(display, str(fifo))),
                           "did not answer within")
    assert took < short_patience * 3


@contextlib.contextmanager
def _abstract_x_names(count: int) -> Iterator[tuple[list[socket.socket], list[int]]]:
    """count X servers' abstract names nobody uses, each held by a listening socket that
    accepts nothing (the listeners, and their display numbers)."""
    taken = set(x11.abstract_servers())
    numbers = [n for n in range(40000, 50000) if f"/tmp/.X11-unix/X{n}" not in taken][:count]
    listeners = []
    try:
        for number in numbers:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(f"\0/tmp/.X11-unix/X{number}")
            listener.listen(4)
            listeners.append(listener)
        yield listeners, numbers
    finally:
        for listener in listeners:
            listener.close()


def _answer_set_up(listener: socket.socket, status: int) -> None:
    """Answer every connection's set-up with status (1: in, 0: refused)."""
    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                _recv(connection, 12)
                connection.sendall(struct.pack("<BxHHH", status, 11, 0, 0))
                time.sleep(0.1)
    threading.Thread(target=serve, daemon=True).start()


def test_the_probe_tells_every_x_server_apart_within_one_budget() -> None:
    """Any local program may hold X servers' abstract names, as many as it likes, and serve
    them or not. The root side's probe (a process of the sandbox's UID, without a cookie) asks
    them all at once: it names the server that let it in and each one that said nothing, not
    the one that refused, and it is done within its budget however many there are."""
    from sandboxapp.features.container import NetworkAccess
    from sandboxapp.profile.model import Network

    with _abstract_x_names(300) as (listeners, numbers), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as far:
        # A display number of any length is a display (Xvfb :123456 is one).
        far_number = next(n for n in range(900000, 901000)
                          if f"/tmp/.X11-unix/X{n}" not in x11.abstract_servers())
        far.bind(f"\0/tmp/.X11-unix/X{far_number}")
        far.listen(4)
        _answer_set_up(far, 1)
        _answer_set_up(listeners[0], 1)
        _answer_set_up(listeners[1], 0)
        # One whose queue of connections is full: the probe cannot even ask it.
        full = listeners[2]
        full.listen(0)
        waiting = []
        for _ in range(4):
            with contextlib.suppress(BlockingIOError):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                waiting.append(client)
                client.connect(f"\0/tmp/.X11-unix/X{numbers[2]}")
        started = time.monotonic()
        probe = x11.start_probe(65534)
        assert probe is not None
        found = x11.probe_result(probe)
        took = time.monotonic() - started
        for client in waiting:
            client.close()
        silent = {f":{n}" for n in numbers[2:]}
        assert f":{numbers[0]}" in found.admitted, found.admitted
        assert f":{far_number}" in found.admitted, found.admitted
        assert f":{numbers[1]}" not in found.admitted + found.silent
        assert silent <= set(found.silent), sorted(silent - set(found.silent))[:5]
        assert took < x11.PROBE_BUDGET + 1.5, took
        # What the launch says: the display that lets it in, on one line.
        check = NetworkAccess(Network.HOST).check_as_sandbox(65534)
        assert check is not None
        _one_line_error(check, f":{numbers[0]}", "lets the sandbox in without a cookie")
        for admitting in (listeners[0], far):
            admitting.shutdown(socket.SHUT_RDWR)  # its thread's accept() ends
            admitting.close()
        # With none that lets it in, the silent ones are named: neither a yes nor a no.
        check = NetworkAccess(Network.HOST).check_as_sandbox(65534)
        assert check is not None
        _one_line_error(check, f":{numbers[3]}", "did not answer within")


# --- sound ----------------------------------------------------------------------------------

def _pulse_packet(connection: socket.socket) -> tuple[int, int]:
    """Read one packet of the client's; its (command, tag)."""
    length, *_ = struct.unpack(">IIIII", _recv(connection, 20))
    payload = _recv(connection, length)
    command, tag = struct.unpack(">xIxI", payload[:10])
    return command, tag


def _pulse_reply(connection: socket.socket, tag: int, body: bytes = b"",
                 length: int | None = None) -> None:
    payload = b"L" + struct.pack(">I", 2) + b"L" + struct.pack(">I", tag) + body
    size = len(payload) if length is None else length
    connection.sendall(struct.pack(">IIIII", size, 0xFFFFFFFF, 0, 0, 0) + payload)


def _pulse_until_request(connection: socket.socket) -> int:
    """Accept the handshake (auth, client name); the tag of the request that follows."""
    for _ in range(2):
        _, tag = _pulse_packet(connection)
        _pulse_reply(connection, tag, b"L" + struct.pack(">I", 32))
    return _pulse_packet(connection)[1]


def _pulse_huge_packet(connection: socket.socket) -> None:
    _, tag = _pulse_packet(connection)
    _pulse_reply(connection, tag, length=0xFFFFFFF0)
    _stream_zeros(connection)


def _pulse_endless_text(connection: socket.socket) -> None:
    tag = _pulse_until_request(connection)
    _pulse_reply(connection, tag, b"L" + struct.pack(">I", 7) + b"t" + b"A" * 60000)


def _pulse_deep_nesting(connection: socket.socket) -> None:
    tag = _pulse_until_request(connection)
    body = (b"L" + struct.pack(">I", 7) + b"tmodule-native-protocol-unix\0" + b"tx\0"
            + b"L" + struct.pack(">I", 1) + b"f" * 50000)
    _pulse_reply(connection, tag, body)


def _pulse_silent(connection: socket.socket) -> None:
    _pulse_packet(connection)
    time.sleep(30)


def _pulse_flood(connection: socket.socket) -> None:
    """Replies to tags the client never used, as fast as it takes them."""
    _pulse_packet(connection)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _pulse_reply(connection, 999999, b"\0" * 1000)


@pytest.mark.parametrize("serve", [
    _pulse_huge_packet, _pulse_endless_text, _pulse_deep_nesting, _pulse_silent, _pulse_flood,
], ids=["huge-packet", "endless-text", "deep-nesting", "silent", "flood"])
def test_a_hostile_sound_server_gets_no_answer_taken(tmp_path: Path, serve: Serve) -> None:
    """The sound proxy asks the user's server which source a record stream names: a server
    that answers with garbage, too much or nothing gets no answer taken from it (the record
    stream is refused), and the proxy is not held for long."""
    with fake_server(tmp_path / "native", serve) as path:
        lookup = SourceLookup(path)
        started = time.monotonic()
        try:
            assert lookup(pulsewire.INVALID_INDEX, "@DEFAULT_SOURCE@") is None
        finally:
            lookup.close()
        took = time.monotonic() - started
    assert took < 40, took  # libpulse gives up on a server after 30 s


# --- root's cleanup -------------------------------------------------------------------------

def _limit_memory() -> None:
    limit = 1 << 30  # far above what cleanup needs; far below what the fake servers offer
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_roots_cleanup_survives_the_servers_a_record_names(
        fake_display: Callable[[Serve], Display], tmp_path: Path) -> None:
    """A killed launch's record names a display whose socket a user now serves: root's cleanup
    does not talk to it (the trusted authorization lapses by itself), neither hangs nor grows,
    and removes the launch's own directories; the sound entry needs no server."""
    connected: list[int] = []

    def count(connection: socket.socket) -> None:
        connected.append(1)
        _x_huge_reply(connection)

    display = fake_display(count)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    sound_dir = tmp_path / "d"
    sound_dir.mkdir()
    (sound_dir / "client.conf").write_text("autospawn = no\n")
    x11_dir = tmp_path / "x"
    x11_dir.mkdir(mode=0o700)
    (x11_dir / "Xauthority").write_bytes(b"cookie")
    os.chown(x11_dir, 4242, 4242)
    os.chown(x11_dir / "Xauthority", 4242, 4242)
    record = {"version": 1, "profile": "victim", "pid": 999999999, "started": 1.0,
              "next_id": 3, "entries": [
                  {"id": 1, "kind": "x11", "dir": str(x11_dir), "user": 4242,
                   "display": display.number, "xauthority": None, "authid": 7,
                   "server": [os.getpid(), start_ticks(os.getpid())]},
                  {"id": 2, "kind": "sound", "socket": str(sound_dir / "native"),
                   "dir": str(sound_dir), "user": os.getuid()}]}
    (run_dir / "victim.json").write_text(json.dumps(record))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sandboxapp", "cleanup"], cwd=REPO, capture_output=True,
        text=True, timeout=60, check=False, preexec_fn=_limit_memory,
        env={"PATH": os.environ["PATH"], "HOME": "/root", "SANDBOXAPP_RUN_DIR": str(run_dir)})
    took = time.monotonic() - started
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "could not undo" not in result.stdout + result.stderr
    assert "cleaned up after victim" in result.stdout + result.stderr
    assert took < 20, took
    assert connected == []
    assert not x11_dir.exists() and not (run_dir / "victim.json").exists()
    assert not sound_dir.exists()
