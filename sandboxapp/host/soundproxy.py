"""The sound door: a filtering proxy between a sandbox and the user's sound server.

PulseAudio has no per-client permissions: whoever reaches a server's socket may load modules
(a TCP listener, a plugin from any path) and move or kill other programs' streams, and its
modules act on what clients write in their property lists. So the sandbox never reaches the
server. It gets a socket of its own that the launcher serves while the app runs; each
connection there becomes one connection of the launcher's to the user's server (PulseAudio, or
PipeWire's pulse server), with the user's cookie and credentials, and every packet passes
through a SoundFilter (soundfilter.py), which says what goes on and how it is rewritten.

Limits: MAX_CONNECTIONS at once per sandbox (the server's client slots are few); a connection
that has not sent its whole handshake within HANDSHAKE_SECONDS is closed before the server
ever hears of it; packets have a bounded size; shared memory is never offered, and ancillary
data (descriptors) is never passed on. The server's packets are always read at once: what the
sandbox has not taken yet waits here, at most MAX_BACKLOG bytes and STALL_SECONDS without
progress, else the connection ends (a sandbox that never reads made the user's PulseAudio
queue without end for it). New streams are paced (STREAMS_PER_SECOND). When the app exits
the proxy closes: the sandbox's streams end at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host import pulsewire, unixsocket
from sandboxapp.host.soundfilter import Refused, SoundFilter, SourceInfo

# Larger than any packet a player sends (libpulse's memblocks are 64 KiB); larger is an attack.
MAX_PACKET = 1 << 20
# A player holds one connection (libpulse's context): Firefox ESR playing a page's <audio>
# held one at a time (measured through this socket). Four leave room for a second program,
# and a sandbox can no longer fill the server's client slots.
MAX_CONNECTIONS = 4
HANDSHAKE_SECONDS = 5.0
# What waits for the sandbox to take it: seconds of the largest stream a sandbox may record
# (48 kHz stereo float: 384 KB/s); a player reads at once.
MAX_BACKLOG = 4 << 20
STALL_SECONDS = 10.0
# New streams a sandbox may have the server make, per second, after a burst: Debian 12's
# PipeWire (0.3.65) crashes when a client that listens for events goes while another makes and
# ends streams fast (measured: 5 times in 6 at hundreds per second, never at 5 per second); a
# player makes one per sound it starts.
STREAMS_PER_SECOND = 5.0
STREAM_BURST = 10


# The longest a new stream waits for its turn: a sandbox that asks for more than that ahead
# (from many connections at once) loses the connection that asked.
MAX_PACE_WAIT = 5.0


class StreamPace:
    """The pace of a sandbox's new streams, over all its connections: a token bucket."""

    def __init__(self, rate: float = STREAMS_PER_SECOND, burst: int = STREAM_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, closed: threading.Event) -> None:
        """Return once the sandbox may have one more stream made, or its connection is
        closed meanwhile (the connection waits); Refused where its turn is too far ahead."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            delay = (1 - self.tokens) / self.rate if self.tokens < 1 else 0.0
            if delay > MAX_PACE_WAIT:
                raise Refused(f"new streams asked for faster than {self.rate:g} a second")
            self.tokens -= 1  # taken now; a debt is waited out below
        if delay:
            closed.wait(delay)


def _read_packet(sock: socket.socket, by: float | None = None) -> tuple[bytes, bytes]:
    """(descriptor, payload) of the next packet, whole before the monotonic time `by` (None:
    whenever it comes); ConnectionError at the end."""
    head = unixsocket.recv_exactly(sock, pulsewire.DESCRIPTOR.size, by)
    length = pulsewire.DESCRIPTOR.unpack(head)[0]
    if length > MAX_PACKET:
        raise Refused(f"a packet of {length} bytes")
    return head, unixsocket.recv_exactly(sock, length, by)


@dataclass
class _Connection:
    """One sandbox client and, once it has said its handshake, the launcher's connection for
    it to the user's server."""

    client: socket.socket
    rules: SoundFilter
    pace: StreamPace
    server: socket.socket | None = None

    def __post_init__(self) -> None:
        self.closed = threading.Event()
        # Set once the thread that serves it has returned: it holds its slot until then.
        self.done = threading.Event()
        # What the sandbox is still to take, in order, and its size in bytes.
        self.backlog: list[bytes] = []
        self.backlog_size = 0
        self.ready = threading.Condition()

    def to_client(self, data: bytes) -> None:
        """Queue a packet for the sandbox; never waits for it (the server's thread calls)."""
        with self.ready:
            if self.backlog_size + len(data) > MAX_BACKLOG:
                raise Refused("the sandbox does not take what it is sent")
            self.backlog.append(data)
            self.backlog_size += len(data)
            self.ready.notify()

    def write_client(self) -> None:
        """Send the backlog as the sandbox takes it; a sandbox that takes nothing for
        STALL_SECONDS is gone."""
        poller = select.poll()
        poller.register(self.client, select.POLLOUT)
        while True:
            with self.ready:
                while not self.backlog and not self.closed.is_set():
                    self.ready.wait()
                if self.closed.is_set():
                    return
                data = b"".join(self.backlog)
                self.backlog.clear()
            while data:
                if not poller.poll(STALL_SECONDS * 1000):
                    raise Refused(f"the sandbox took nothing for {STALL_SECONDS:g} s")
                if self.closed.is_set():
                    return
                try:
                    sent = self.client.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                data = data[sent:]
                with self.ready:
                    self.backlog_size -= sent

    def close(self) -> None:
        self.closed.set()
        with self.ready:
            self.ready.notify_all()
        for sock in (self.client, self.server):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def serve_client(self, server_path: Path) -> None:
        """The sandbox's packets, through the filter, until either side ends."""
        try:
            head, payload = _read_packet(self.client, time.monotonic() + HANDSHAKE_SECONDS)
        except unixsocket.ProtocolError:
            raise Refused("no handshake") from None
        handshake = self.rules.handshake(head, payload)
        self.client.settimeout(None)
        threading.Thread(target=self.guarded, args=(self.write_client,), daemon=True,
                         name="sound proxy: to sandbox").start()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.server.connect(str(server_path))
        self.server.sendmsg([handshake], pulsewire.credentials())
        threading.Thread(target=self.guarded, args=(self.serve_server,), daemon=True,
                         name="sound proxy: server").start()
        while True:
            head, payload = _read_packet(self.client)
            outcome = self.rules.from_client(head, payload)
            if outcome.creates:
                self.pace.wait(self.closed)
            for data in outcome.to_server:
                self.server.sendall(data)
            for data in outcome.to_client:
                self.to_client(data)

    def serve_server(self) -> None:
        assert self.server is not None
        while True:
            head, payload = _read_packet(self.server)
            data = self.rules.from_server(head, payload)
            if data is not None:
                self.to_client(data)

    def guarded(self, serve: Callable[[], None]) -> None:
        try:
            serve()
        except (OSError, Refused, pulsewire.PulseError):
            pass
        finally:
            self.close()


class SourceLookup:
    """Asks the user's server which source a record stream names, through libpulse
    (pulsectl), on a connection of its own (the sandbox's is busy with its request), kept
    until closed."""

    def __init__(self, server: Path) -> None:
        self.server = server
        self.pulse: Any = None  # a pulsectl.Pulse, once a question is asked
        self.lock = threading.Lock()

    def __call__(self, index: int, name: str | None) -> SourceInfo | None:
        """The source by index, or (with INVALID_INDEX) by name ("@DEFAULT_SOURCE@" is the
        default one); None where there is none, or the server does not say."""
        import pulsectl  # only once a sandbox records

        with self.lock:
            try:
                if self.pulse is None:
                    self.pulse = pulsectl.Pulse("sandboxapp", server=f"unix:{self.server}",
                                                connect=False)
                    # No timeout here: pulsectl 24.12 waits the whole of it, always;
                    # libpulse gives up on a server that does not answer by itself.
                    self.pulse.connect(autospawn=False)
                found = (self.pulse.get_source_by_name(name) if index == pulsewire.INVALID_INDEX
                         else self.pulse.source_info(index))
            except pulsectl.PulseIndexError:
                return None
            except pulsectl.PulseError:
                self._close()  # asked anew, on a new connection, next time
                return None
            return SourceInfo(found.index, found.name, found.monitor_of_sink)

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self.pulse is not None:
            self.pulse.close()
            self.pulse = None


class SoundProxy:
    """Serves a sandbox's sound socket until closed."""

    def __init__(self, path: Path, server: Path, cookie: bytes, *, recording: bool,
                 identity: str, user: DesktopUser | None = None) -> None:
        self.path = path
        self.server = server
        self.cookie = cookie
        self.recording = recording
        self.identity = identity
        self.listener = unixsocket.SandboxListener(path, MAX_CONNECTIONS, user)
        self.connections: list[_Connection] = []
        self.lock = threading.Lock()
        self.lookup = SourceLookup(server)
        self.pace = StreamPace()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="sound proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                live = [c for c in self.connections if not c.done.is_set()]
                self.connections = live
                if self.closed or len(live) >= MAX_CONNECTIONS:
                    client.close()
                    continue
                rules = SoundFilter(self.recording, self.cookie, self.lookup,
                                    self.identity)
                connection = _Connection(client, rules, self.pace)
                self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True,
                             name="sound proxy: sandbox").start()

    def _serve(self, connection: _Connection) -> None:
        try:
            connection.guarded(lambda: connection.serve_client(self.server))
        finally:
            connection.done.set()

    def close(self) -> None:
        """Stop serving, and end every connection (the sandbox's streams end with them)."""
        with self.lock:
            self.closed = True
            connections = list(self.connections)
        self.listener.close()
        for connection in connections:
            connection.close()
        self.lookup.close()


@contextlib.contextmanager
def serving(path: Path, server: Path, cookie: bytes, *, recording: bool,
            identity: str, user: DesktopUser | None = None) -> Iterator[SoundProxy]:
    """user: the owner of path's directory, where root acts for them (unixsocket)."""
    proxy = SoundProxy(path, server, cookie, recording=recording, identity=identity, user=user)
    try:
        yield proxy
    finally:
        proxy.close()
