"""What the user's X server lets in without a cookie: its host list, read over the user's own
connection (the core protocol's ListHosts).

A sandbox with network = "host" shares the host's network namespace, so the user's server's
abstract socket (@/tmp/.X11-unix/XN) is open to it, whatever is bound into it: it gets in
wherever the host list admits a local client without a cookie (access control off, `xhost
+local:`, or a server-interpreted localuser or localgroup entry that names a UID or GID of the
sandbox's). sandboxapp itself never changes the host list.

This one request is spoken here directly over the display's socket: the connection set-up, the
cookie from the user's Xauthority file and one round trip, in about a millisecond, with a
deadline on every read. A full client library (python-xlib, which the display paths load) costs
a launch without a display tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.command import base_env, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.host import unixsocket
from sandboxapp.host.display import XAccess

FAMILY_SERVER_INTERPRETED = 5
FAMILY_LOCALHOST = 252  # `xhost +local:`

_LIST_HOSTS = 110
_COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
# Xauthority families that match a local connection (libXau's FamilyLocal and FamilyWild).
_AUTH_FAMILY_LOCAL = 256
_AUTH_FAMILY_WILD = 65535
_AUTH_FILE_LIMIT = 1 << 20
# The largest reply taken: a host list of a few thousand entries is far smaller. A server
# claiming more is not one (a reply's length field could ask for 16 GiB).
_MAX_REPLY = 1 << 20
# How long the probe waits for all the servers at once: a server answers a connection set-up
# in about a millisecond; one that takes longer is busy or not a server.
PROBE_BUDGET = 1.5
# What the probe process may take beyond that: setpriv and Python's start.
_PROBE_START = 3.0


@dataclass(frozen=True)
class HostList:
    access_enabled: bool
    hosts: frozenset[tuple[int, bytes]]  # (family, address)

    def cookieless(self, ids: range | None) -> str | None:
        """What lets a local client in without a cookie, as xhost would show it. ids None: what
        admits every local client. ids, the sandbox's UIDs and GIDs: any entry but a
        server-interpreted localuser or localgroup that names, beyond doubt, an id outside ids
        (an address entry admits a sandbox in the host's network over TCP, and, naming one of
        the host's own addresses, over the local socket too)."""
        if not self.access_enabled:
            return "access control is off (xhost +)"
        for family, address in sorted(self.hosts):
            if family == FAMILY_LOCALHOST:
                return "LOCAL: (xhost +local:)"
            if ids is None:
                continue
            if family != FAMILY_SERVER_INTERPRETED:
                return f"an address entry (family {family}: {address.hex() or 'empty'})"
            kind, _, name = address.partition(b"\0")
            number = _id_of(kind, name)
            if number is None or number in ids:
                shown = address.decode("ascii", errors="replace").replace("\0", ":")
                return f"SI:{shown}"
        return None


# The numbers an entry may give as "#N": what the server reads the same way (it takes any
# strtol() prefix, sign and base; the launcher takes only this, and suspects the rest).
_PLAIN_ID = re.compile(rb"#(0|[1-9][0-9]{0,9})")
_NOBODY = -1  # a name no account has: it admits no one


def _id_of(kind: bytes, name: bytes) -> int | None:
    """The UID (localuser) or GID (localgroup) a server-interpreted entry names beyond doubt;
    None for anything else."""
    import grp
    import pwd

    if kind not in (b"localuser", b"localgroup"):
        return None
    plain = _PLAIN_ID.fullmatch(name)
    if plain is not None:
        number = int(plain[1])
        return number if number < 1 << 31 else None
    if not name or not name.isascii() or not name.replace(b"-", b"").replace(
            b"_", b"").replace(b".", b"").isalnum():
        return None
    try:
        if kind == b"localuser":
            return pwd.getpwnam(name.decode()).pw_uid
        return grp.getgrnam(name.decode()).gr_gid
    except KeyError:
        return _NOBODY


def _fields(data: bytes, offset: int, count: int) -> tuple[list[bytes], int]:
    """count length-prefixed (big-endian 16-bit) fields of an Xauthority record."""
    fields = []
    for _ in range(count):
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if offset + length > len(data):
            raise ValueError("truncated")
        fields.append(data[offset:offset + length])
        offset += length
    return fields, offset


def find_cookie(data: bytes, display_number: int, hostname: str) -> bytes | None:
    """The MIT-MAGIC-COOKIE-1 an X client uses for a local display, as libXau chooses it:
    the first record for this host (or any host) and this display number (or any)."""
    number = str(display_number).encode()
    offset = 0
    try:
        while offset < len(data):
            (family,) = struct.unpack_from(">H", data, offset)
            (address, record_number, name, cookie), offset = _fields(data, offset + 2, 4)
            local = (family == _AUTH_FAMILY_LOCAL and address == hostname.encode()) or (
                family == _AUTH_FAMILY_WILD)
            if local and record_number in (number, b"") and name == _COOKIE_NAME:
                return cookie
    except (ValueError, struct.error):
        return None  # not an Xauthority file: connect without a cookie, as libXau would
    return None


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


class _Connection:
    """A connection speaking the core protocol in little-endian byte order."""

    def __init__(self, access: XAccess) -> None:
        self.access = access
        self.sequence = 0
        self.deadline = unixsocket.deadline()
        self.sock = unixsocket.connect(access.display.socket)
        try:
            self._set_up(self._cookie())
        except BaseException:
            self.sock.close()
            raise

    def _cookie(self) -> bytes | None:
        path = self.access.cookie_file()
        if path is None:
            return None
        try:
            # Not blocking, and a regular file only: a FIFO in its place must not hang us.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.read(fd, _AUTH_FILE_LIMIT)
        except OSError:
            return None
        finally:
            os.close(fd)
        return find_cookie(data, self.access.display.number, socket.gethostname())

    def _read(self, size: int) -> bytes:
        return unixsocket.recv_exactly(self.sock, size, self.deadline)

    def _set_up(self, cookie: bytes | None) -> None:
        name, data = (_COOKIE_NAME, cookie) if cookie is not None else (b"", b"")
        self.deadline = unixsocket.deadline()
        self.sock.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(data))
                          + _pad(name) + _pad(data))
        head = self._read(8)
        status, reason_length, _, _, extra = struct.unpack("<BBHHH", head)
        body = self._read(extra * 4)  # at most 256 KiB: the length is 16 bits
        if status != 1:
            reason = body[:reason_length] if status == 0 else body
            # The server's words, as one short line (they end up in a one-line error).
            text = " ".join(reason[:200].decode(errors="replace").split())
            raise ConnectionRefusedError(text or "authorisation failed")

    def _send(self, request: bytes) -> int:
        self.deadline = unixsocket.deadline()
        self.sock.sendall(request)
        self.sequence += 1
        return self.sequence

    def _reply(self, sequence: int) -> bytes:
        """The reply to request `sequence`; an X error for any request up to it raises."""
        while True:
            head = self._read(32)
            kind = head[0]
            (number,) = struct.unpack_from("<H", head, 2)
            if kind == 0:  # an error
                raise OSError(f"X error {head[1]} for request {head[10]}")
            if kind == 1:
                (extra,) = struct.unpack_from("<I", head, 4)
                if extra * 4 > _MAX_REPLY:
                    raise unixsocket.ProtocolError(
                        f"the X server sent a reply of {extra * 4} bytes, more than a "
                        f"server's answer can be ({_MAX_REPLY})")
                body = head + self._read(extra * 4)
                if number == sequence:
                    return body
            # events and other replies: none are asked for; skip them

    def list_hosts(self) -> HostList:
        reply = self._reply(self._send(struct.pack("<BxH", _LIST_HOSTS, 1)))
        (count,) = struct.unpack_from("<H", reply, 8)
        hosts = set()
        offset = 32
        for _ in range(count):
            if offset + 4 > len(reply):
                raise unixsocket.ProtocolError("the X server's host list ended early")
            family, length = struct.unpack_from("<BxH", reply, offset)
            if offset + 4 + length > len(reply):
                raise unixsocket.ProtocolError("the X server's host list ended early")
            hosts.add((family, reply[offset + 4:offset + 4 + length]))
            offset += 4 + length + (-length % 4)
        return HostList(access_enabled=reply[1] == 1, hosts=frozenset(hosts))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def _connection(access: XAccess) -> Iterator[_Connection]:
    try:
        connection = _Connection(access)
    except OSError as exc:
        raise SandboxError(
            f"cannot open the X display :{access.display.number}: {exc}",
            hint="check DISPLAY and XAUTHORITY: they must name your running X session",
            status=ExitStatus.LAUNCHER,
        ) from None
    try:
        yield connection
    except OSError as exc:
        raise SandboxError(f"the X display :{access.display.number} failed: {exc}",
                           status=ExitStatus.LAUNCHER) from None
    finally:
        connection.close()


def cookieless_admission(access: XAccess, ids: range | None = None) -> str | None:
    """What the user's server admits without a cookie (HostList.cookieless), or None."""
    with _connection(access) as connection:
        return connection.list_hosts().cookieless(ids)


# Run as a UID of the sandbox's (setpriv), standard library only: every X server's abstract name
# (arguments after the budget) tried at once, each connection set-up without a cookie sent and
# its first byte awaited, all within one budget. It prints "admitted NAME" for a server that
# let it in, and "silent NAME" for one that did not say within the budget or could not be
# asked (its queue full, no descriptor left): neither a yes nor a no.
_PROBE = r"""
import errno, resource, select, socket, struct, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
end = time.monotonic() + float(sys.argv[1])
setup = struct.pack("<BxHHHHxx", ord("l"), 11, 0, 0, 0)
asked, poller = {}, select.poll()
for name in sys.argv[2:]:
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    except OSError:
        print("silent", name)
        continue
    try:
        sock.connect("\0" + name)
        sock.send(setup)
    except OSError as exc:
        sock.close()
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            print("silent", name)
        continue
    asked[sock.fileno()] = (sock, name)
    poller.register(sock, select.POLLIN)
while asked and (left := end - time.monotonic()) > 0:
    for fd, _ in poller.poll(left * 1000):
        sock, name = asked.pop(fd)
        poller.unregister(fd)
        try:
            status = sock.recv(1)
        except OSError:
            status = b""
        sock.close()
        if status == b"\x01":
            print("admitted", name)
for sock, name in asked.values():
    print("silent", name)
"""


def abstract_servers() -> list[str]:
    """The abstract names X servers listen on in this network namespace (@/tmp/.X11-unix/XN),
    which a sandbox sharing it reaches without any bind."""
    listening = "00010000"  # __SO_ACCEPTCON: a listening socket
    names = []
    for line in Path("/proc/net/unix").read_text(errors="replace").splitlines()[1:]:
        fields = line.split()
        if (len(fields) == 8 and fields[3] == listening
                and re.fullmatch(r"@/tmp/\.X11-unix/X[0-9]+", fields[7])):
            names.append(fields[7][1:])
    return sorted(set(names))


def start_probe(uid: int) -> subprocess.Popen[str] | None:
    """Try, as uid (with its own GID, no groups), every X server's abstract name without a
    cookie, as a process of the sandbox's would; None where there is none. Root's (setpriv)."""
    names = abstract_servers()
    if not names:
        return None
    return spawn(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                  os.path.realpath(sys.executable), "-I", "-S", "-c", _PROBE,
                  str(PROBE_BUDGET), *names],
                 env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@dataclass(frozen=True)
class ProbeResult:
    admitted: list[str]  # the displays (":N") that let the probe in
    silent: list[str]  # those that said neither yes nor no within PROBE_BUDGET


def probe_result(process: subprocess.Popen[str]) -> ProbeResult:
    """What the probe found; an error where it could not tell at all."""
    try:
        out, _ = process.communicate(timeout=PROBE_BUDGET + _PROBE_START)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        out = None
    if process.returncode != 0 or out is None:
        raise SandboxError("could not check whether the host's X servers let the sandbox in "
                           "without a cookie", status=ExitStatus.LAUNCHER)
    found: dict[str, list[str]] = {"admitted": [], "silent": []}
    for line in out.splitlines():
        verdict, _, name = line.partition(" ")
        found[verdict].append(":" + name.rsplit("X", 1)[1])
    return ProbeResult(**found)
