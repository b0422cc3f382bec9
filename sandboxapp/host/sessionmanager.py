"""The sandbox's X session manager: how a launch asks its program to quit, as a desktop does.

A desktop's logout asks each program to save and quit over XSMP (the X Session Management
Protocol, over ICE): SaveYourself with shutdown, then Die. Firefox honours that with its own
whole shutdown (every window kept in the session it restores), where a signal is a crash to it.
The launcher serves a session manager of the sandbox's own on a socket bound into the
container and named by SESSION_MANAGER; when the sandbox is to stop, it asks every program
registered there to quit.

Why not libSM's manager side: its listener opens sockets of its own choosing (TCP among them)
and its C parser was never meant for a hostile peer. What is spoken here is the smallest part
of the protocols a manager needs, and the peer is the sandbox: every message is bounded and
checked, anything unexpected ends that connection (an ICE Error of any severity but the least
makes a libICE client exit, so none is ever sent), and nothing a client says is acted upon but
its registration and its answers to our requests. Nothing crosses to the user's desktop.

Layouts: the ICE and XSMP specifications (X.Org's ice.xml and xsmp.xml), as libICE and libSM
speak them: an 8-byte header (major opcode, minor opcode, two data bytes, CARD32 length in
8-byte units after the header); integers in the byte order each side announced first.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host.unixsocket import SandboxListener

# The socket's name in the sandbox's session manager directory.
SESSION_SOCKET = "socket"
# How many connections a sandbox may hold open (a browser makes one), and the largest message
# taken (Firefox's properties are about 330 bytes).
MAX_CONNECTIONS = 8
MAX_MESSAGE = 64 * 1024
# A client completes the handshake at once (its main thread waits for it): one that does not
# within this is dropped.
SETUP_TIMEOUT = 5.0
# A program sends a handful of messages in its life (Firefox: five, and a Ping now and then):
# a connection that sends more is flooding the launcher, and ends.
MAX_MESSAGES = 1000
# How long a client's save may take before it is told to die all the same.
SAVE_TIMEOUT = 5.0

ICE = 0
# ICE's minor opcodes.
BYTE_ORDER, CONNECTION_SETUP, CONNECTION_REPLY = 1, 2, 6
PROTOCOL_SETUP, PROTOCOL_REPLY = 7, 8
PING, PING_REPLY, WANT_TO_CLOSE = 9, 10, 11
# XSMP's.
REGISTER_CLIENT, REGISTER_CLIENT_REPLY, SAVE_YOURSELF = 1, 2, 3
SAVE_YOURSELF_REQUEST, INTERACT_REQUEST, INTERACT_DONE, SAVE_YOURSELF_DONE = 4, 5, 7, 8
DIE, CONNECTION_CLOSED, SET_PROPERTIES, DELETE_PROPERTIES = 9, 11, 12, 13
GET_PROPERTIES, PROPERTIES_REPLY, PHASE2_REQUEST, PHASE2, SAVE_COMPLETE = 14, 15, 16, 17, 18
SAVE_LOCAL, INTERACT_NONE = 1, 0
VERSION = (1, 0)  # of ICE and of XSMP, the only ones there are
LITTLE = 0  # our byte order, announced in our ByteOrder message
VENDOR, RELEASE = b"sandboxapp", b"1.0"
# What a client ID that libSM made is written in.
CLIENT_ID_BYTES = frozenset(b"0123456789abcdefABCDEF-")


class Broken(Exception):
    """The client broke the protocol (or hung up): its connection ends."""


def _pad(size: int, unit: int) -> int:
    return (unit - size % unit) % unit


def _string(text: bytes) -> bytes:
    """An ICE STRING: CARD16 length, the bytes, padded to 4."""
    return struct.pack("<H", len(text)) + text + bytes(_pad(2 + len(text), 4))


def _array8(data: bytes) -> bytes:
    """An XSMP ARRAY8: CARD32 length, the bytes, padded to 8."""
    return struct.pack("<I", len(data)) + data + bytes(_pad(4 + len(data), 8))


def message(major: int, minor: int, body: bytes = b"", data: bytes = b"\0\0") -> bytes:
    """A whole message in our byte order; body padded to 8."""
    body += bytes(_pad(len(body), 8))
    return struct.pack("<BB2sI", major, minor, data, len(body) // 8) + body


class Reader:
    """A message body read with the client's byte order, every field bounds-checked."""

    def __init__(self, body: bytes, order: str) -> None:
        self.body = body
        self.order = order
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.body):
            raise Broken("a field runs past its message")
        chunk = self.body[self.at:self.at + size]
        self.at += size
        return chunk

    def card(self, fmt: str) -> int:
        value: int = struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def string(self) -> bytes:
        size = self.card("H")
        text = self.take(size)
        self.take(_pad(2 + size, 4))
        return text

    def version(self) -> tuple[int, int]:
        return self.card("H"), self.card("H")

    def array8(self) -> bytes:
        size = self.card("I")
        data = self.take(size)
        self.take(_pad(4 + size, 8))
        return data

    def list_of(self, read_item: str) -> None:
        """Walk a LISTofARRAY8 or LISTofPROPERTY, checking it; what it says is not kept."""
        count = self.card("I")
        self.take(4)
        for _ in range(count):
            if read_item == "property":
                self.array8()
                self.array8()
                values = self.card("I")
                self.take(4)
                for _ in range(values):
                    self.array8()
            else:
                self.array8()

    def end(self) -> None:
        """The whole body was read, but for its padding to 8."""
        if len(self.body) - self.at >= 8:
            raise Broken("a message is longer than what it holds")


def _version_index(versions: list[tuple[int, int]]) -> int:
    if VERSION not in versions:
        raise Broken("it speaks no version we do")
    return versions.index(VERSION)


@dataclass
class Client:
    """One connection, from the handshake on; its sends are whole and one at a time."""

    sock: socket.socket
    order: str = "<"
    opcode: int = 0  # XSMP's major opcode, the client's choice, echoed back
    registered: bool = False
    saving: bool = False  # a SaveYourself waits for its SaveYourselfDone
    shutdown: bool = False  # that save is the last: Die follows it
    quit_waiting: bool = False  # asked to quit while an earlier save was under way
    lock: threading.Lock = field(default_factory=threading.Lock)  # one send at a time
    state: threading.Lock = field(default_factory=threading.Lock)  # the flags above
    timer: threading.Timer | None = None  # Die, should the last save not end in time
    deadline: float | None = None  # the handshake's, while it lasts
    messages: int = 0

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def receive(self) -> tuple[int, int, bytes, Reader]:
        """The next message: major, minor, its two data bytes and a reader of its body."""
        self.messages += 1
        if self.messages > MAX_MESSAGES:
            raise Broken("too many messages")
        header = self._exactly(8)
        major, minor, data = header[0], header[1], header[2:4]
        (units,) = struct.unpack(self.order + "I", header[4:])
        if units * 8 > MAX_MESSAGE:
            raise Broken("a message is too long")
        body = self._exactly(units * 8)
        return major, minor, data, Reader(body, self.order)

    def _exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise Broken("the handshake took too long")
                self.sock.settimeout(left)
            chunk = self.sock.recv(size)
            if not chunk:
                raise Broken("the client hung up")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    # -- what we ask of it --------------------------------------------------------------------

    def save_yourself(self, *, shutdown: bool) -> None:
        """Start a save (with self.state held); the last one (shutdown) ends in Die."""
        self.saving, self.shutdown = True, shutdown
        self.send(message(self.opcode, SAVE_YOURSELF,
                          bytes([SAVE_LOCAL, int(shutdown), INTERACT_NONE, 0])))
        if shutdown and self.timer is None:
            self.timer = threading.Timer(SAVE_TIMEOUT, self.die)
            self.timer.daemon = True
            self.timer.start()  # cancelled when the connection ends

    def saved(self) -> None:
        """Its SaveYourselfDone: Die after the last save, else the next save if one waits."""
        with self.state:
            self.saving = False
            if self.shutdown:
                if self.timer is not None:
                    self.timer.cancel()
                self.die()
                return
            self.send(message(self.opcode, SAVE_COMPLETE))
            if self.quit_waiting:
                self.save_yourself(shutdown=True)

    def die(self) -> None:
        with contextlib.suppress(OSError):
            self.send(message(self.opcode, DIE))

    def ask_to_quit(self) -> None:
        with self.state:
            if self.saving:
                self.quit_waiting = True  # XSMP allows one save at a time
            else:
                self.save_yourself(shutdown=True)


class SessionManager:
    """Serves a sandbox's session manager socket until closed."""

    def __init__(self, path: Path, user: DesktopUser | None = None) -> None:
        self.path = path
        self.listener = SandboxListener(path, MAX_CONNECTIONS, user)
        self.clients: list[Client] = []
        self.lock = threading.Lock()
        self.quitting = False
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="session manager").start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                if self.closed or len(self.clients) >= MAX_CONNECTIONS:
                    sock.close()
                    continue
                client = Client(sock)
                self.clients.append(client)
            try:
                threading.Thread(target=self._serve, args=(client,), daemon=True,
                                 name="session manager: sandbox").start()
            except RuntimeError:
                self._drop(client)  # no thread to serve it: it goes, the others stay

    def _serve(self, client: Client) -> None:
        try:
            client.deadline = time.monotonic() + SETUP_TIMEOUT
            self._handshake(client)
            client.deadline = None
            client.sock.settimeout(None)
            while True:
                self._handle(client, *client.receive())
        except (Broken, OSError, struct.error, RuntimeError):
            pass  # RuntimeError: no thread could start for its Die timer
        finally:
            self._drop(client)

    def _drop(self, client: Client) -> None:
        with self.lock:
            if client in self.clients:
                self.clients.remove(client)
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_RDWR)  # a send that waits for room ends
        with client.state:
            if client.timer is not None:
                client.timer.cancel()
        # Once no send is under way: a descriptor closed under a send could be reused.
        with client.lock:
            client.sock.close()

    def _handshake(self, client: Client) -> None:
        """ByteOrder both ways, ConnectionSetup, ProtocolSetup for XSMP; no authentication
        (the socket is the sandbox's alone: whoever reaches it is the sandbox)."""
        client.send(message(ICE, BYTE_ORDER, data=bytes([LITTLE, 0])))
        header = client._exactly(8)
        if header[:2] != bytes([ICE, BYTE_ORDER]) or header[2] not in (0, 1) or any(header[4:]):
            raise Broken("no ByteOrder first")
        client.order = "<" if header[2] == LITTLE else ">"
        major, minor, data, body = client.receive()
        if (major, minor) != (ICE, CONNECTION_SETUP):
            raise Broken("no ConnectionSetup")
        versions, auths = data[0], data[1]
        if body.take(1)[0] not in (0, 1):
            raise Broken("a BOOL that is neither")
        body.take(7)
        body.string()
        body.string()
        for _ in range(auths):
            body.string()  # offered mechanisms: none is asked for
        index = _version_index([body.version() for _ in range(versions)])
        body.end()
        client.send(message(ICE, CONNECTION_REPLY, _string(VENDOR) + _string(RELEASE),
                            data=bytes([index, 0])))
        major, minor, data, body = client.receive()
        if (major, minor) != (ICE, PROTOCOL_SETUP) or not 1 <= data[0] <= 255:
            raise Broken("no ProtocolSetup")
        client.opcode = data[0]
        versions, auths = body.card("B"), body.card("B")
        body.take(6)
        if body.string() != b"XSMP":
            raise Broken("a protocol other than XSMP")
        body.string()
        body.string()
        for _ in range(auths):
            body.string()
        index = _version_index([body.version() for _ in range(versions)])
        body.end()
        client.send(message(ICE, PROTOCOL_REPLY, _string(VENDOR) + _string(RELEASE),
                            data=bytes([index, client.opcode])))

    def _handle(self, client: Client, major: int, minor: int, data: bytes,
                body: Reader) -> None:
        if major == ICE:
            if minor == PING and not body.body:
                client.send(message(ICE, PING_REPLY))
                return
            if minor == PING_REPLY and not body.body:
                return
            raise Broken("an ICE message that is not for a set-up connection")
        if major != client.opcode:
            raise Broken("an unknown major opcode")
        if not client.registered:
            if minor != REGISTER_CLIENT:
                raise Broken("a message before RegisterClient")
            previous = body.array8()
            body.end()
            self._register(client, previous)
            return
        if minor == SAVE_YOURSELF_DONE and not body.body and client.saving:
            if data[0] not in (0, 1):
                raise Broken("a BOOL that is neither")
            client.saved()
        elif minor in (SET_PROPERTIES, DELETE_PROPERTIES):
            body.list_of("property" if minor == SET_PROPERTIES else "array8")
            body.end()  # checked, not kept: nothing restarts a sandbox's program
        elif minor == GET_PROPERTIES and not body.body:
            client.send(message(client.opcode, PROPERTIES_REPLY, bytes(8)))
        elif minor == PHASE2_REQUEST and not body.body and client.saving:
            client.send(message(client.opcode, PHASE2))  # there is no other client to wait for
        elif minor in (SAVE_YOURSELF_REQUEST, INTERACT_REQUEST, INTERACT_DONE):
            pass  # saves are ours to start, and a sandbox gets no say in a logout
        elif minor == CONNECTION_CLOSED:
            raise Broken("the client closed its connection")
        else:
            raise Broken("an XSMP message out of place")

    def _register(self, client: Client, previous: bytes) -> None:
        # A previous ID is the client's own to keep; a new one is made like libSM makes them.
        known = 0 < len(previous) <= 64 and all(byte in CLIENT_ID_BYTES for byte in previous)
        client_id = previous if known else b"2" + str(uuid.uuid4()).encode()
        client.send(message(client.opcode, REGISTER_CLIENT_REPLY, _array8(client_id)))
        # Its state first: a quit asked for from now on waits until the first save is sent.
        with client.state:
            with self.lock:
                client.registered = True
                quitting = self.quitting
            if quitting:
                client.save_yourself(shutdown=True)
            elif not known:
                # XSMP: a new client is asked for a first save at once.
                client.save_yourself(shutdown=False)

    # -- the launcher's ----------------------------------------------------------------------

    def ask_to_quit(self) -> bool:
        """Ask every registered program to save and quit; True if there was one to ask."""
        with self.lock:
            self.quitting = True
            registered = [client for client in self.clients if client.registered]
        asked = False
        for client in registered:
            # Each in a thread of its own: a client that stops reading blocks only that thread
            # (its sends wait for room), never the launcher's stop.
            try:
                threading.Thread(target=self._ask_to_quit, args=(client,), daemon=True,
                                 name="session manager: quit").start()
                asked = True
            except RuntimeError:
                pass  # no thread to ask it with: the stop signals it instead
        return asked

    @staticmethod
    def _ask_to_quit(client: Client) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            client.ask_to_quit()

    def registered(self) -> int:
        with self.lock:
            return sum(client.registered for client in self.clients)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            clients = list(self.clients)
        self.listener.close()
        for client in clients:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def serving(path: Path, user: DesktopUser | None = None) -> Iterator[SessionManager]:
    manager = SessionManager(path, user)
    try:
        yield manager
    finally:
        manager.close()
