"""The sandbox's session manager against libSM, the client library Firefox loads, and against
what a hostile sandbox may send it instead."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxapp.host import sessionmanager
from sandboxapp.host.sessionmanager import MAX_CONNECTIONS, SessionManager, serving
from tests.integration.xsmp_client import SM, XsmpClient

FIRST_SAVE = "save-yourself shutdown=0 interact=0"
LAST_SAVE = "save-yourself shutdown=1 interact=0"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[SessionManager]:
    errors: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = errors.append
    try:
        with serving(tmp_path / "socket") as served:
            yield served
    finally:
        threading.excepthook = previous
    assert errors == [], "a thread of the session manager failed"


def address(manager: SessionManager) -> str:
    return f"unix/:{manager.path}"


def test_a_libsm_client_registers_and_is_asked_to_save_and_quit(
        manager: SessionManager) -> None:
    client = XsmpClient(address(manager))
    assert client.client_id.startswith(b"2") and len(client.client_id) == 37
    assert client.process(2, until="save-complete")
    assert client.heard == [FIRST_SAVE, "save-complete"]
    assert manager.ask_to_quit()
    assert client.process(2, until="die")
    assert client.heard == [FIRST_SAVE, "save-complete", LAST_SAVE, "die"]
    client.close()


def test_a_client_that_never_finishes_its_save_is_told_to_die_all_the_same(
        manager: SessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessionmanager, "SAVE_TIMEOUT", 0.5)
    client = XsmpClient(address(manager), answer_saves=False)
    assert client.process(1, until=FIRST_SAVE)
    # Asked to quit while its first save is under way: XSMP allows one save at a time.
    assert manager.ask_to_quit()
    client.process(1)
    assert client.heard == [FIRST_SAVE]
    SM.SmcSaveYourselfDone(client.conn, 1)  # the first save, done late
    assert client.process(3, until="die")
    assert client.heard == [FIRST_SAVE, "save-complete", LAST_SAVE, "die"]


def test_a_client_that_connects_while_the_sandbox_stops_is_asked_to_quit_at_once(
        manager: SessionManager) -> None:
    assert not manager.ask_to_quit()  # nobody to ask yet: the caller signals instead
    client = XsmpClient(address(manager))
    assert client.process(2, until="die")
    assert client.heard == [LAST_SAVE, "die"]


def _header(major: int, minor: int, units: int, data: bytes = b"\0\0") -> bytes:
    return struct.pack("<BB2sI", major, minor, data, units)


BYTE_ORDER = _header(0, 1, 0)
SETUP = bytes.fromhex("0002010004000000" "0000000000000000" "03004d4954000000"
                      "0300312e30000000" "0100000000000000")
XSMP_PROTOCOL = bytes.fromhex("0007010005000000" "0100000000000000" "040058534d500000"
                              "03004d4954000000" "0300312e30000000" "0100000000000000")
OTHER_PROTOCOL = XSMP_PROTOCOL.replace(b"XSMP", b"XMSP")
REGISTER = _header(1, 1, 1) + bytes(8)

HOSTILE = {
    "no byte order first": b"GET / HTTP/1.1\r\n\r\n",
    "a byte order of neither kind": _header(0, 1, 0, b"\x07\0"),
    "a message of 32 GiB": BYTE_ORDER + _header(0, 2, 0xFFFFFFFF),
    "an authentication list longer than the message":
        BYTE_ORDER + _header(0, 2, 1, b"\x01\xff") + bytes(8),
    "a string running past its message":
        BYTE_ORDER + _header(0, 2, 2, b"\x01\x00") + bytes(8) + b"\xff\xff" + bytes(6),
    "no version we speak": BYTE_ORDER + SETUP.replace(bytes.fromhex("01000000"),
                                                      bytes.fromhex("09000000"), 1)[:40],
    "a protocol other than XSMP": BYTE_ORDER + SETUP + OTHER_PROTOCOL,
    "major opcode 0 for XSMP":
        BYTE_ORDER + SETUP + XSMP_PROTOCOL.replace(b"\x00\x07\x01", b"\x00\x07\x00", 1),
    "a message before RegisterClient": BYTE_ORDER + SETUP + XSMP_PROTOCOL + _header(1, 12, 0),
    "a client ID longer than its message":
        BYTE_ORDER + SETUP + XSMP_PROTOCOL + _header(1, 1, 1) + struct.pack("<I", 1 << 30)
        + bytes(4),
    "properties past their message": BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER
        + _header(1, 12, 1) + struct.pack("<I", 5) + bytes(4),
    "a SaveYourselfDone nobody asked for":
        BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER + _header(1, 8, 0, b"\x01\0") * 2,
    "an unknown major opcode": BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER
        + _header(77, 1, 0),
}


def _closed_by_the_manager(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_what_breaks_the_protocol_ends_that_connection_and_nothing_else(
        manager: SessionManager, what: str) -> None:
    client = XsmpClient(address(manager))
    attacker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    attacker.connect(str(manager.path))
    attacker.sendall(HOSTILE[what])
    assert _closed_by_the_manager(attacker, 3), f"{what}: the connection stayed open"
    attacker.close()
    # The program's own registration still gets its quit.
    assert manager.ask_to_quit()
    assert client.process(2, until="die")


def test_the_registration_of_a_well_formed_message_is_kept(manager: SessionManager) -> None:
    """The control for the hostile cases: the same bytes, well formed, keep the connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(manager.path))
    sock.sendall(BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER)
    assert not _closed_by_the_manager(sock, 1)
    assert manager.ask_to_quit()
    sock.close()


def test_connections_that_never_finish_their_handshake_are_dropped_and_bounded(
        manager: SessionManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessionmanager, "SETUP_TIMEOUT", 0.5)
    held = []
    for _ in range(MAX_CONNECTIONS * 4):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(manager.path))
        held.append(sock)
    time.sleep(0.2)
    assert len(manager.clients) <= MAX_CONNECTIONS
    # Held silent past the handshake's deadline: dropped, and a program gets in again.
    time.sleep(1)
    assert all(_closed_by_the_manager(sock, 2) for sock in held)
    client = XsmpClient(address(manager))
    assert client.process(2, until="save-complete")


def test_a_client_that_stops_reading_cannot_hold_up_the_stop(manager: SessionManager) -> None:
    """Pings the manager answers, never read: its answers fill the socket, and its sends to
    that client wait for room. Asking everyone to quit must not wait with them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(manager.path))
    # Registered, its first save done: a quit request is sent to it at once.
    sock.sendall(BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER + _header(1, 8, 0, b"\x01\0"))
    sock.setblocking(False)
    ping = _header(0, 9, 0)
    full = False
    deadline = time.monotonic() + 10
    while not full and time.monotonic() < deadline:
        try:
            sock.send(ping * 512)
        except BlockingIOError:
            time.sleep(0.2)
            try:
                sock.send(ping)
            except BlockingIOError:
                full = True  # both ways: the manager's sends to it wait for room now
    assert full
    started = time.monotonic()
    assert manager.ask_to_quit()
    assert time.monotonic() - started < 0.5
    sock.close()



def _registered(manager: SessionManager) -> socket.socket:
    """A raw client, registered, its first save done."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(manager.path))
    sock.sendall(BYTE_ORDER + SETUP + XSMP_PROTOCOL + REGISTER + _header(1, 8, 0, b"\x01\0"))
    return sock


@pytest.mark.parametrize("pings", [sessionmanager.MAX_MESSAGES - 100,
                                   sessionmanager.MAX_MESSAGES + 100])
def test_a_flood_of_messages_ends_that_connection(manager: SessionManager, pings: int) -> None:
    """Pings, each answered: past MAX_MESSAGES the connection ends (a sandbox cannot keep a
    thread of the launcher answering for ever); below it, it stays (the control)."""
    sock = _registered(manager)
    # Its answers (8 bytes a ping) fit the socket's buffer: nothing waits for this reader.
    sock.sendall(_header(0, 9, 0) * pings)
    assert _closed_by_the_manager(sock, 3) is (pings > sessionmanager.MAX_MESSAGES)
    sock.close()


def test_die_timers_go_with_their_connections(manager: SessionManager,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs asked to quit that never finish their save each have a Die timer: a thread.
    Once they are gone, so are their timers: a sandbox that connects, is asked to quit and
    hangs up, again and again, leaves no thread behind."""
    monkeypatch.setattr(sessionmanager, "SAVE_TIMEOUT", 60)
    before = {thread.ident for thread in threading.enumerate()}
    socks = [_registered(manager) for _ in range(MAX_CONNECTIONS)]
    deadline = time.monotonic() + 5
    while sum(c.registered for c in manager.clients) < MAX_CONNECTIONS:
        assert time.monotonic() < deadline, "the clients did not register"
        time.sleep(0.05)
    assert manager.ask_to_quit()

    def timers() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate()
                if isinstance(thread, threading.Timer) and thread.ident not in before]

    deadline = time.monotonic() + 5
    while len(timers()) < MAX_CONNECTIONS:
        assert time.monotonic() < deadline, "no Die timer started"
        time.sleep(0.05)
    for sock in socks:
        sock.close()
    deadline = time.monotonic() + 5
    while timers():
        assert time.monotonic() < deadline, f"{len(timers())} Die timers outlived their clients"
        time.sleep(0.05)
