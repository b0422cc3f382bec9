"""A client for the few requests of PulseAudio's native protocol that a launch needs.

Loading and unloading one module are three requests (authenticate, load or look up, unload);
spoken here directly over the server's socket they take about a millisecond. Going through
libpulse from Python costs a launch tens of milliseconds (ctypes bindings, the library's
main loop), and the same again at exit. PipeWire's PulseAudio server speaks this protocol too.

The protocol: each packet is a 20-byte descriptor (payload length, channel, offset, flags; all
big-endian) and a "tagstruct", a sequence of typed values each led by a one-byte tag. A
command is (command, tag, arguments...); the server answers REPLY or ERROR with the same tag.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.host import unixsocket

PROTOCOL_VERSION = 32  # module info carries a property list from 15 on; 32 is PulseAudio 12
COOKIE_SIZE = 256
_CONTROL_CHANNEL = 0xFFFFFFFF
# The largest packet taken: the replies asked for are a few hundred bytes; a server claiming
# more is not one.
_MAX_PACKET = 1 << 20

# Commands (pulsecore/native-common.h).
ERROR, REPLY = 0, 2
AUTH, SET_CLIENT_NAME = 8, 9
GET_MODULE_INFO, GET_MODULE_INFO_LIST = 25, 26
LOAD_MODULE, UNLOAD_MODULE = 51, 52

# Error codes the server may answer with (pulse/def.h), for messages.
_ERRORS = {1: "access denied", 2: "unknown command", 3: "invalid argument", 4: "entity exists",
           5: "no such entity", 7: "protocol error", 9: "not authorised",
           14: "module initialisation failed", 19: "not supported"}


class PulseError(Exception):
    """The server refused a request, or did not speak the protocol."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u32(self, value: int) -> Writer:
        self.parts.append(b"L" + struct.pack(">I", value))
        return self

    def string(self, value: str | None) -> Writer:
        self.parts.append(b"N" if value is None else b"t" + value.encode() + b"\0")
        return self

    def arbitrary(self, value: bytes) -> Writer:
        self.parts.append(b"x" + struct.pack(">I", len(value)) + value)
        return self

    def proplist(self, values: Mapping[str, str]) -> Writer:
        self.parts.append(b"P")
        for key, text in values.items():
            data = text.encode() + b"\0"
            self.string(key).u32(len(data)).arbitrary(data)
        return self.string(None)

    def packet(self) -> bytes:
        payload = b"".join(self.parts)
        return struct.pack(">IIIII", len(payload), _CONTROL_CHANNEL, 0, 0, 0) + payload


# Fixed-size values by tag, for values a reply carries that we skip over.
_FIXED = {ord("B"): 1, ord("R"): 8, ord("r"): 8, ord("U"): 8, ord("T"): 8, ord("V"): 4,
          ord("a"): 6, ord("1"): 0, ord("0"): 0}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def at_end(self) -> bool:
        return self.offset >= len(self.data)

    def _tag(self) -> int:
        if self.at_end:
            raise PulseError("a reply ended early")
        tag = self.data[self.offset]
        self.offset += 1
        return tag

    def _take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise PulseError("a reply ended early")
        value = self.data[self.offset:self.offset + size]
        self.offset += size
        return value

    def u32(self) -> int:
        if self._tag() != ord("L"):
            raise PulseError("a reply did not hold the number expected")
        (value,) = struct.unpack(">I", self._take(4))
        return int(value)

    def _text(self) -> str:
        """A NUL-terminated text, which must end inside the packet."""
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise PulseError("a reply held a text that does not end")
        value = self.data[self.offset:end].decode(errors="replace")
        self.offset = end + 1
        return value

    def string(self) -> str | None:
        tag = self._tag()
        if tag == ord("N"):
            return None
        if tag != ord("t"):
            raise PulseError("a reply did not hold the text expected")
        return self._text()

    def skip(self, depth: int = 0) -> None:
        """Skip one value of any type (values hold values only two deep: a format's property
        list; deeper is not a reply of the protocol's)."""
        if depth > 2:
            raise PulseError("a reply nested values deeper than the protocol does")
        tag = self._tag()
        if tag in _FIXED:
            self._take(_FIXED[tag])
        elif tag == ord("L"):
            self._take(4)
        elif tag == ord("t"):
            self._text()
        elif tag == ord("x"):
            (size,) = struct.unpack(">I", self._take(4))
            self._take(size)
        elif tag == ord("m"):
            self._take(self._take(1)[0])
        elif tag == ord("v"):
            self._take(self._take(1)[0] * 4)
        elif tag == ord("P"):
            while self.string() is not None:  # key, length, value ... then a null key
                self.skip(depth + 1)
                self.skip(depth + 1)
        elif tag == ord("f"):
            self.skip(depth + 1)
            self.skip(depth + 1)
        elif tag != ord("N"):
            raise PulseError(f"a reply held a value of unknown type {tag}")


@dataclass(frozen=True)
class ModuleInfo:
    index: int
    name: str
    argument: str


def read_cookie(environ: Mapping[str, str]) -> bytes:
    """The authentication cookie, where libpulse looks for it; zeros when there is none (the
    server then admits us by our credentials, as it does libpulse's clients)."""
    home = environ.get("HOME", "")
    config = environ.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else "")
    candidates = [environ.get("PULSE_COOKIE", ""),
                  f"{config}/pulse/cookie" if config else "",
                  f"{home}/.pulse-cookie" if home else ""]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            with open(candidate, "rb") as stream:
                cookie = stream.read(COOKIE_SIZE)
        except OSError:
            continue
        if len(cookie) == COOKIE_SIZE:
            return cookie
    return bytes(COOKIE_SIZE)


class Connection:
    def __init__(self, path: Path, cookie: bytes, client_name: str) -> None:
        self.tag = 0
        self.deadline = unixsocket.deadline()
        self.sock = unixsocket.connect(path)
        try:
            # Authenticate with the cookie and with our credentials, as libpulse does: the
            # server admits a client of its own UID, or one that knows the cookie.
            writer, tag = self._command(AUTH)
            packet = writer.u32(PROTOCOL_VERSION).arbitrary(cookie).packet()
            creds = struct.pack("=iII", os.getpid(), os.getuid(), os.getgid())
            self.sock.sendmsg([packet], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
            self._reply(tag)
            writer, tag = self._command(SET_CLIENT_NAME)
            self.request(writer.proplist({"application.name": client_name}), tag)
        except BaseException:
            self.sock.close()
            raise

    def _next_tag(self) -> int:
        self.tag += 1
        return self.tag

    def _command(self, command: int) -> tuple[Writer, int]:
        tag = self._next_tag()
        return Writer().u32(command).u32(tag), tag

    def _read(self, size: int) -> bytes:
        return unixsocket.recv_exactly(self.sock, size, self.deadline)

    def _reply(self, tag: int) -> _Reader:
        # One deadline for the reply, whatever else the server sends meanwhile.
        self.deadline = unixsocket.deadline()
        while True:
            length, channel, _, _, _ = struct.unpack(">IIIII", self._read(20))
            if length > _MAX_PACKET:
                raise PulseError("the sound server sent a packet too large to be a reply")
            reader = _Reader(self._read(length))
            if channel != _CONTROL_CHANNEL:
                continue  # audio data: we have no streams, so this is not ours
            command, reply_tag = reader.u32(), reader.u32()
            if reply_tag != tag or command not in (REPLY, ERROR):
                continue  # an event or a request of the server's: none concern us
            if command == ERROR:
                code = reader.u32()
                raise PulseError(_ERRORS.get(code, f"error {code}"), code)
            return reader

    def request(self, writer: Writer, tag: int) -> _Reader:
        """Send a command, and wait for its reply."""
        self.sock.sendall(writer.packet())
        return self._reply(tag)

    def load_module(self, name: str, argument: str) -> int:
        writer, tag = self._command(LOAD_MODULE)
        return self.request(writer.string(name).string(argument), tag).u32()

    def unload_module(self, index: int) -> None:
        writer, tag = self._command(UNLOAD_MODULE)
        self.request(writer.u32(index), tag)

    @staticmethod
    def _module(reader: _Reader) -> ModuleInfo:
        index, name, argument = reader.u32(), reader.string(), reader.string()
        reader.skip()  # how many use it
        reader.skip()  # its property list
        return ModuleInfo(index, name or "", argument or "")

    def module(self, index: int) -> ModuleInfo | None:
        writer, tag = self._command(GET_MODULE_INFO)
        try:
            reader = self.request(writer.u32(index), tag)
        except PulseError as exc:
            if exc.code == 5:  # no such module
                return None
            raise
        return self._module(reader)

    def modules(self) -> list[ModuleInfo]:
        writer, tag = self._command(GET_MODULE_INFO_LIST)
        reader = self.request(writer, tag)
        found = []
        while not reader.at_end:
            found.append(self._module(reader))
        return found

    def close(self) -> None:
        self.sock.close()
