"""PulseAudio's native protocol on the wire: packets and tagstructs, for the sound proxy.

Each packet is a 20-byte descriptor (payload length, channel, offset high and low, flags; all
big-endian) and its payload. On the control channel the payload is a "tagstruct": a sequence of
values, each led by a one-byte type tag (pulsecore/tagstruct.c); a command is (command, tag,
arguments...), and the server answers REPLY or ERROR with the same tag. Other channels carry
audio. PipeWire's PulseAudio server speaks the same protocol.

A tagstruct describes itself, so it is decoded here whole into typed values, and written back
from them byte for byte: the sound proxy checks a command's shape against its signature and
rewrites what it carries (its property lists) on that form. (Where sandboxapp is a client of
the server itself, it is one through libpulse: pulsectl.)
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

COOKIE_SIZE = 256
CONTROL_CHANNEL = 0xFFFFFFFF
INVALID_INDEX = 0xFFFFFFFF
DESCRIPTOR = struct.Struct(">IIIII")


class Command(IntEnum):
    """pulsecore/native-common.h."""

    ERROR = 0
    TIMEOUT = 1
    REPLY = 2
    CREATE_PLAYBACK_STREAM = 3
    DELETE_PLAYBACK_STREAM = 4
    CREATE_RECORD_STREAM = 5
    DELETE_RECORD_STREAM = 6
    EXIT = 7
    AUTH = 8
    SET_CLIENT_NAME = 9
    LOOKUP_SINK = 10
    LOOKUP_SOURCE = 11
    DRAIN_PLAYBACK_STREAM = 12
    STAT = 13
    GET_PLAYBACK_LATENCY = 14
    GET_SERVER_INFO = 20
    GET_SINK_INFO = 21
    GET_SINK_INFO_LIST = 22
    GET_SOURCE_INFO = 23
    GET_SOURCE_INFO_LIST = 24
    GET_MODULE_INFO = 25
    GET_MODULE_INFO_LIST = 26
    GET_SINK_INPUT_INFO = 29
    GET_SOURCE_OUTPUT_INFO = 31
    SUBSCRIBE = 35
    SET_SINK_INPUT_VOLUME = 37
    CORK_PLAYBACK_STREAM = 41
    FLUSH_PLAYBACK_STREAM = 42
    TRIGGER_PLAYBACK_STREAM = 43
    SET_PLAYBACK_STREAM_NAME = 46
    SET_RECORD_STREAM_NAME = 47
    LOAD_MODULE = 51
    UNLOAD_MODULE = 52
    GET_RECORD_LATENCY = 57
    CORK_RECORD_STREAM = 58
    FLUSH_RECORD_STREAM = 59
    PREBUF_PLAYBACK_STREAM = 60
    REQUEST = 61
    PLAYBACK_STREAM_KILLED = 64
    RECORD_STREAM_KILLED = 65
    SUBSCRIBE_EVENT = 66
    SET_SINK_INPUT_MUTE = 69
    SET_PLAYBACK_STREAM_BUFFER_ATTR = 72
    SET_RECORD_STREAM_BUFFER_ATTR = 73
    UPDATE_PLAYBACK_STREAM_SAMPLE_RATE = 74
    UPDATE_RECORD_STREAM_SAMPLE_RATE = 75
    UPDATE_RECORD_STREAM_PROPLIST = 80
    UPDATE_PLAYBACK_STREAM_PROPLIST = 81
    UPDATE_CLIENT_PROPLIST = 82
    REMOVE_RECORD_STREAM_PROPLIST = 83
    REMOVE_PLAYBACK_STREAM_PROPLIST = 84
    REMOVE_CLIENT_PROPLIST = 85
    SET_SOURCE_OUTPUT_VOLUME = 98
    SET_SOURCE_OUTPUT_MUTE = 99


class ErrorCode(IntEnum):
    """pulse/def.h, the ones said here."""

    ACCESS = 1
    NOENTITY = 5


class PulseError(Exception):
    """What came is not the protocol."""


# -- values --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleSpec:
    format: int
    channels: int
    rate: int

    # Bytes per sample by format (pulse/sample.h): u8, a-law, µ-law, s16 le/be, float32 le/be,
    # s32 le/be, s24 le/be, s24-in-32 le/be.
    _SIZES = (1, 1, 1, 2, 2, 4, 4, 4, 4, 3, 3, 4, 4)

    @property
    def frame_size(self) -> int | None:
        """Bytes per frame; None for a spec that is not a valid one."""
        if not 0 <= self.format < len(self._SIZES) or not 1 <= self.channels <= 32:
            return None
        return self._SIZES[self.format] * self.channels


# A property list: (key, value bytes) in order; a text value is UTF-8 ending with one NUL.
Proplist = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class FormatInfo:
    encoding: int
    properties: Proplist


@dataclass(frozen=True)
class ChannelMap:
    positions: bytes


@dataclass(frozen=True)
class ChannelVolumes:
    volumes: tuple[int, ...]


@dataclass(frozen=True)
class Timeval:
    seconds: int
    microseconds: int


@dataclass(frozen=True)
class U8:
    value: int


@dataclass(frozen=True)
class U64:
    """Either of the 64-bit tags: 'R' (u64), 'r' (s64, stored as its bits), 'U' (µs)."""

    tag: bytes
    value: int


@dataclass(frozen=True)
class Volume:
    value: int


@dataclass(frozen=True)
class Arbitrary:
    data: bytes


Value = (int | str | None | bool | U8 | U64 | Volume | Arbitrary | SampleSpec | ChannelMap
         | ChannelVolumes | Timeval | FormatInfo | Proplist)


def kind(value: Value) -> str:
    """A value's letter in a signature: L u32, s text or none, b boolean, B u8, R 64-bit,
    V volume, x arbitrary, a sample spec, m channel map, v channel volumes, T timeval,
    f format info, P property list."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "L"
    if value is None or isinstance(value, str):
        return "s"
    if isinstance(value, tuple):
        return "P"
    return {U8: "B", U64: "R", Volume: "V", Arbitrary: "x", SampleSpec: "a", ChannelMap: "m",
            ChannelVolumes: "v", Timeval: "T", FormatInfo: "f"}[type(value)]


def signature(values: Sequence[Value]) -> str:
    return "".join(kind(value) for value in values)


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise PulseError("a value runs past the end of its packet")
        value = self.data[self.offset:self.offset + size]
        self.offset += size
        return value

    def text(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise PulseError("a text does not end")
        try:
            value = self.data[self.offset:end].decode()
        except UnicodeDecodeError:
            raise PulseError("a text is not UTF-8") from None
        self.offset = end + 1
        return value

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def tagged_u32(self) -> int:
        if self.take(1) != b"L":
            raise PulseError("a property list's length is not a number")
        return self.u32()

    def tagged_text(self) -> str | None:
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag != b"t":
            raise PulseError("a property list's key is not a text")
        return self.text()

    def proplist(self) -> Proplist:
        entries = []
        while (key := self.tagged_text()) is not None:
            length = self.tagged_u32()
            if self.take(1) != b"x" or self.u32() != length:
                raise PulseError("a property's value is not as long as it says")
            entries.append((key, self.take(length)))
        return tuple(entries)

    def value(self) -> Value:
        tag = self.take(1)
        if tag == b"L":
            return self.u32()
        if tag == b"t":
            return self.text()
        if tag == b"N":
            return None
        if tag in (b"1", b"0"):
            return tag == b"1"
        if tag == b"B":
            return U8(self.take(1)[0])
        if tag in (b"R", b"r", b"U"):
            return U64(tag, int(struct.unpack(">Q", self.take(8))[0]))
        if tag == b"V":
            return Volume(self.u32())
        if tag == b"x":
            return Arbitrary(self.take(self.u32()))
        if tag == b"a":
            fmt, channels, rate = struct.unpack(">BBI", self.take(6))
            return SampleSpec(fmt, channels, rate)
        if tag == b"m":
            return ChannelMap(self.take(self.take(1)[0]))
        if tag == b"v":
            count = self.take(1)[0]
            return ChannelVolumes(struct.unpack(f">{count}I", self.take(4 * count)))
        if tag == b"T":
            seconds, micro = struct.unpack(">II", self.take(8))
            return Timeval(seconds, micro)
        if tag == b"P":
            return self.proplist()
        if tag == b"f":
            if self.take(1) != b"B":
                raise PulseError("a format's encoding is not a byte")
            encoding = self.take(1)[0]
            if self.take(1) != b"P":
                raise PulseError("a format has no property list")
            return FormatInfo(encoding, self.proplist())
        raise PulseError(f"a value of unknown type {tag!r}")


def decode(payload: bytes) -> list[Value]:
    """Every value of a tagstruct; PulseError where it is not one."""
    decoder = _Decoder(payload)
    values = []
    while decoder.offset < len(payload):
        values.append(decoder.value())
    return values


def command_and_tag(payload: bytes) -> tuple[int, int] | None:
    """A control packet's command and tag, read without the rest; None where it has none."""
    if len(payload) < 10 or payload[0:1] != b"L" or payload[5:6] != b"L":
        return None
    command, tag = struct.unpack(">xIxI", payload[:10])
    return int(command), int(tag)


def _text(value: str | None) -> bytes:
    return b"N" if value is None else b"t" + value.encode() + b"\0"


def _proplist(entries: Proplist) -> bytes:
    out = [b"P"]
    for key, data in entries:
        out += [_text(key), b"L", struct.pack(">I", len(data)), b"x",
                struct.pack(">I", len(data)), data]
    out.append(b"N")
    return b"".join(out)


def encode_value(value: Value) -> bytes:
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return b"L" + struct.pack(">I", value)
    if value is None or isinstance(value, str):
        return _text(value)
    if isinstance(value, tuple):
        return _proplist(value)
    if isinstance(value, U8):
        return b"B" + bytes([value.value])
    if isinstance(value, U64):
        return value.tag + struct.pack(">Q", value.value)
    if isinstance(value, Volume):
        return b"V" + struct.pack(">I", value.value)
    if isinstance(value, Arbitrary):
        return b"x" + struct.pack(">I", len(value.data)) + value.data
    if isinstance(value, SampleSpec):
        return b"a" + struct.pack(">BBI", value.format, value.channels, value.rate)
    if isinstance(value, ChannelMap):
        return b"m" + bytes([len(value.positions)]) + value.positions
    if isinstance(value, ChannelVolumes):
        return (b"v" + bytes([len(value.volumes)])
                + struct.pack(f">{len(value.volumes)}I", *value.volumes))
    if isinstance(value, Timeval):
        return b"T" + struct.pack(">II", value.seconds, value.microseconds)
    return b"fB" + bytes([value.encoding]) + _proplist(value.properties)


def encode(values: Sequence[Value]) -> bytes:
    return b"".join(encode_value(value) for value in values)


def control_packet(values: Sequence[Value]) -> bytes:
    payload = encode(values)
    return DESCRIPTOR.pack(len(payload), CONTROL_CHANNEL, 0, 0, 0) + payload


def error_packet(tag: int, code: int) -> bytes:
    return control_packet([int(Command.ERROR), tag, code])


def text_property(text: str) -> bytes:
    """A property's value as libpulse stores a text: UTF-8 and a NUL."""
    return text.encode() + b"\0"


def proplist(values: Mapping[str, str]) -> Proplist:
    return tuple((key, text_property(text)) for key, text in values.items())


def credentials() -> list[tuple[int, int, bytes]]:
    """Our credentials, as libpulse sends them with its handshake: the server admits a
    client of its own user, or one that knows the cookie."""
    return [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
             struct.pack("=iII", os.getpid(), os.getuid(), os.getgid()))]


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
