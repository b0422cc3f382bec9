"""What may pass the sound door, decided packet by packet: the rules of the sound proxy.

No sockets here (soundproxy.py moves the bytes): a SoundFilter takes each packet of the sandbox
and of the server and says what goes on, rewritten, and what is answered or ends the
connection. The rules:

- Only the commands a player needs pass, each only in the shape the negotiated protocol version
  gives it (checked against its signature, value by value); anything else is answered "access
  denied", a command that is not in its own shape ends the connection.
- Property lists are rewritten: only keys a player needs are kept (CLIENT_PROPERTIES,
  STREAM_PROPERTIES, FORMAT_PROPERTIES), each value a short text. Every other key goes: PulseAudio's
  modules act on keys (module-filter-apply loads module-<filter.apply> with arguments from
  filter.apply.*; filter-heuristics and role-cork act on media.role=phone; stream-restore on
  module-stream-restore.id; augment-properties reads a file named by
  application.process.binary), PipeWire's pulse server routes by target.object, node.target
  and stream.capture.sink. The client's application.id is the sandbox's own, whatever it says,
  so no restored volume or device of another program is read or written by it.
- Replies are matched to requests by tag: a tag reused while its request is pending ends the
  connection, and a stream, sink input or source output is the connection's own only from the
  reply to its own successful creation, at the field the protocol puts it in, until the answer
  to its deletion (or the server's word that it was killed). A command names only a stream the
  connection owns and is not deleting (PipeWire's pulse server gives a deleted stream's channel
  to the next stream made).
- Audio goes only to the connection's own playback streams, at offset 0 with a relative seek
  (what libpulse's pa_stream_write sends), and reaches the server in whole frames of the
  stream's sample spec (a frame split between two packets is joined).
- Recording (microphone = true only) is from a source that is no sink's monitor, named by the
  index the proxy looked up; a stream that names no source gets the default source when that
  is a microphone, and nothing otherwise; a stream "directly on" another's sink input is
  refused; the stream may not be moved.
- Events name only the server, sinks, sources and the connection's own client and streams.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sandboxapp.host.pulsewire import (
    CONTROL_CHANNEL,
    DESCRIPTOR,
    INVALID_INDEX,
    U8,
    Arbitrary,
    Command,
    ErrorCode,
    FormatInfo,
    Proplist,
    PulseError,
    SampleSpec,
    Value,
    control_packet,
    decode,
    error_packet,
    signature,
    text_property,
)

# Protocol 13 (PulseAudio 0.9.11, 2008) brought property lists; 35 is PulseAudio 16's and
# PipeWire's. A client that offers more is spoken to in 35, whose shapes are known here.
MIN_VERSION, MAX_VERSION = 13, 35
# The handshake's version word: the low 16 bits; the high ones offer shared memory and memfd.
VERSION_MASK = 0xFFFF
MAX_PENDING = 256
# The longest property value kept, with its NUL: a title, a name, a format's rates.
MAX_VALUE = 512

# application.process.binary is not among them: module-augment-properties reads the host's
# desktop file of that name (and merges its properties), PipeWire applies quirks by it.
CLIENT_PROPERTIES = frozenset({
    "application.name", "application.version", "application.icon_name",
    "application.language", "application.process.id",
})
# A stream's own (the server merges the client's into it).
STREAM_PROPERTIES = CLIENT_PROPERTIES | frozenset({
    "media.name", "media.title", "media.artist", "media.icon_name", "media.language",
})
FORMAT_PROPERTIES = frozenset({
    "format.sample_format", "format.rate", "format.channels", "format.channel_map",
})
IDENTITY = "application.id"
_MARKED = frozenset({"application.name"})  # always the sandbox's (_named_as_sandbox)
# The key module-stream-restore files a stream's saved volume, mute and device under (taken
# verbatim when the stream has it): the sandbox's own, never another program's.
RESTORE_ID = "module-stream-restore.id"
# Streams at once per connection (the connections per sandbox are limited too): a sink takes
# 256 in all, and a sandbox that held them would keep every other program from playing.
MAX_PLAYBACK_STREAMS, MAX_RECORD_STREAMS = 8, 2
# Ended streams whose end event is still awaited (it follows the deletion's answer).
MAX_ENDED = 64
PCM = 1  # the only encoding let through: passthrough streams would bypass the mixer
# Values that name something on the host (a file, an icon) are plain names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_NAMED_BY_VALUE = {"application.icon_name", "media.icon_name"}
_DIGITS = re.compile(r"[0-9]{1,10}")

# Subscription facilities (pulse/def.h) a player is told about, and the event of an end.
_FACILITY_MASK, _SINK, _SOURCE, _SINK_INPUT, _SOURCE_OUTPUT, _CLIENT, _SERVER = (
    0x0F, 0, 1, 2, 3, 5, 7)
_TYPE_MASK, _REMOVE = 0x30, 0x20


class Refused(Exception):
    """The connection is ended: the sandbox broke the protocol or a limit."""


def _since(version: int, *pieces: tuple[int, str]) -> str:
    return "".join(part for since, part in pieces if version >= since)


# The arguments of each command let through, after (command, tag), by negotiated version
# (pulsecore/protocol-native.c). Letters: see pulsewire.kind; "f*" any number of formats.
def _create_playback(v: int) -> str:
    return _since(v, (0, "amLsLbLLLLv"), (12, "bbbbbbb"), (13, "bbP"), (14, "bb"),
                  (15, "bbb"), (17, "b"), (18, "b"), (21, "Bf*"))


def _create_record(v: int) -> str:
    return _since(v, (0, "amLsLbL"), (12, "bbbbbbb"), (13, "bbPL"), (14, "b"), (15, "bb"),
                  (22, "Bf*vbbbbb"))


_PLAYBACK: dict[Command, Callable[[int], str]] = {
    Command.SET_CLIENT_NAME: lambda v: "P",
    Command.UPDATE_CLIENT_PROPLIST: lambda v: "LP",
    Command.REMOVE_CLIENT_PROPLIST: lambda v: "s*",
    Command.LOOKUP_SINK: lambda v: "s",
    Command.LOOKUP_SOURCE: lambda v: "s",
    Command.STAT: lambda v: "",
    Command.GET_SERVER_INFO: lambda v: "",
    Command.GET_SINK_INFO: lambda v: "Ls",
    Command.GET_SINK_INFO_LIST: lambda v: "",
    Command.GET_SOURCE_INFO: lambda v: "Ls",
    Command.GET_SOURCE_INFO_LIST: lambda v: "",
    Command.GET_SINK_INPUT_INFO: lambda v: "L",
    Command.SUBSCRIBE: lambda v: "L",
    Command.CREATE_PLAYBACK_STREAM: _create_playback,
    Command.DELETE_PLAYBACK_STREAM: lambda v: "L",
    Command.DRAIN_PLAYBACK_STREAM: lambda v: "L",
    Command.FLUSH_PLAYBACK_STREAM: lambda v: "L",
    Command.TRIGGER_PLAYBACK_STREAM: lambda v: "L",
    Command.PREBUF_PLAYBACK_STREAM: lambda v: "L",
    Command.CORK_PLAYBACK_STREAM: lambda v: "Lb",
    Command.GET_PLAYBACK_LATENCY: lambda v: "LT",
    Command.SET_PLAYBACK_STREAM_NAME: lambda v: "Ls",
    Command.SET_PLAYBACK_STREAM_BUFFER_ATTR: lambda v: _since(v, (0, "LLLLLb"), (14, "b")),
    Command.UPDATE_PLAYBACK_STREAM_PROPLIST: lambda v: "LLP",
    Command.REMOVE_PLAYBACK_STREAM_PROPLIST: lambda v: "Ls*",
    Command.SET_SINK_INPUT_VOLUME: lambda v: "Lv",
    Command.SET_SINK_INPUT_MUTE: lambda v: "Lb",
}
_RECORDING: dict[Command, Callable[[int], str]] = {
    Command.CREATE_RECORD_STREAM: _create_record,
    Command.DELETE_RECORD_STREAM: lambda v: "L",
    Command.CORK_RECORD_STREAM: lambda v: "Lb",
    Command.FLUSH_RECORD_STREAM: lambda v: "L",
    Command.GET_RECORD_LATENCY: lambda v: "LT",
    Command.GET_SOURCE_OUTPUT_INFO: lambda v: "L",
    Command.SET_RECORD_STREAM_NAME: lambda v: "Ls",
    Command.SET_RECORD_STREAM_BUFFER_ATTR: lambda v: _since(v, (0, "LLLb"), (14, "b")),
    Command.UPDATE_RECORD_STREAM_PROPLIST: lambda v: "LLP",
    Command.REMOVE_RECORD_STREAM_PROPLIST: lambda v: "Ls*",
    Command.SET_SOURCE_OUTPUT_VOLUME: lambda v: "Lv",
    Command.SET_SOURCE_OUTPUT_MUTE: lambda v: "Lb",
}
# Not let through: UPDATE_*_STREAM_SAMPLE_RATE (a stream not made with a variable rate aborts
# PulseAudio 16.1 in its resampler; players do not send it).
# Commands that address a sink input or source output by its global index: only the
# connection's own.
_BY_INPUT = {Command.GET_SINK_INPUT_INFO, Command.SET_SINK_INPUT_VOLUME,
             Command.SET_SINK_INPUT_MUTE}
_BY_OUTPUT = {Command.GET_SOURCE_OUTPUT_INFO, Command.SET_SOURCE_OUTPUT_VOLUME,
              Command.SET_SOURCE_OUTPUT_MUTE}
# Commands that address a stream by its channel on the connection.
_BY_PLAYBACK_CHANNEL = {
    Command.DELETE_PLAYBACK_STREAM, Command.DRAIN_PLAYBACK_STREAM,
    Command.FLUSH_PLAYBACK_STREAM, Command.TRIGGER_PLAYBACK_STREAM,
    Command.PREBUF_PLAYBACK_STREAM, Command.CORK_PLAYBACK_STREAM,
    Command.GET_PLAYBACK_LATENCY, Command.SET_PLAYBACK_STREAM_NAME,
    Command.SET_PLAYBACK_STREAM_BUFFER_ATTR, Command.UPDATE_PLAYBACK_STREAM_PROPLIST,
    Command.REMOVE_PLAYBACK_STREAM_PROPLIST}
_BY_RECORD_CHANNEL = {
    Command.DELETE_RECORD_STREAM, Command.CORK_RECORD_STREAM, Command.FLUSH_RECORD_STREAM,
    Command.GET_RECORD_LATENCY, Command.SET_RECORD_STREAM_NAME,
    Command.SET_RECORD_STREAM_BUFFER_ATTR, Command.UPDATE_RECORD_STREAM_PROPLIST,
    Command.REMOVE_RECORD_STREAM_PROPLIST}
_DELETES = {Command.DELETE_PLAYBACK_STREAM, Command.DELETE_RECORD_STREAM}
# Fields of a creation request (after command and tag) and of its reply.
_PLAYBACK_PROPLIST, _PLAYBACK_PASSTHROUGH, _PLAYBACK_FORMATS = 20, 27, 28
_RECORD_SOURCE_INDEX, _RECORD_SOURCE_NAME, _RECORD_NO_MOVE = 2, 3, 12
_RECORD_PROPLIST, _RECORD_DIRECT_ON_INPUT, _RECORD_FORMATS = 16, 17, 21
_REPLY_PLAYBACK_SPEC, _REPLY_RECORD_SPEC = 7, 4
# module-stream-restore's names for the two kinds of stream.
_INPUT, _OUTPUT = "sink-input", "source-output"

@dataclass(frozen=True)
class SourceInfo:
    """What the server says of a source."""

    index: int
    name: str
    monitor_of_sink: int  # INVALID_INDEX for a source that is no sink's monitor

    @property
    def is_monitor(self) -> bool:
        return self.monitor_of_sink != INVALID_INDEX


# Asks the server about the source a record stream names: (index, or INVALID_INDEX and a name).
SourceLookup = Callable[[int, str | None], SourceInfo | None]


def _text_value(key: str, data: bytes) -> bool:
    """Whether a property's value is a short text of the kind its key holds."""
    if not 1 <= len(data) <= MAX_VALUE or data[-1] != 0 or 0 in data[:-1]:
        return False
    try:
        text = data[:-1].decode()
    except UnicodeDecodeError:
        return False
    if not text.isprintable():
        return False
    if key in _NAMED_BY_VALUE:
        return _NAME.fullmatch(text) is not None
    if key == "application.process.id":
        return _DIGITS.fullmatch(text) is not None
    return True


def filter_properties(entries: Proplist, allowed: frozenset[str]) -> Proplist:
    """Only the allowed keys, each with a value of its kind; every other entry is dropped."""
    kept: dict[str, bytes] = {}
    for key, data in entries:
        if key in allowed and _text_value(key, data):
            kept[key] = data  # the last of a key wins, as in the server
    return tuple(kept.items())


# The values libpulse writes for a PCM format (pa_format_info_set_*): a quoted sample format
# name, a rate and a channel count as plain numbers, a quoted channel map.
_FORMAT_VALUE = {
    "format.sample_format": re.compile(r'"(u8|aLaw|uLaw|s16le|s16be|float32le|float32be|s32le|'
                                       r's32be|s24le|s24be|s24-32le|s24-32be)"'),
    "format.rate": re.compile(r"[1-9][0-9]{0,5}"),
    "format.channels": re.compile(r"[1-9]|[12][0-9]|3[0-2]"),
    "format.channel_map": re.compile(r'"[a-z0-9,-]{1,400}"'),
}
MAX_RATE = 384000  # PA_RATE_MAX


def valid_spec(spec: Value) -> bool:
    """A sample spec a server can use: a known format, 1 to 32 channels, a rate from 1 Hz to
    PA_RATE_MAX (PipeWire's pulse server divides by it)."""
    return (isinstance(spec, SampleSpec) and spec.frame_size is not None
            and 1 <= spec.rate <= MAX_RATE)


def _filter_format(value: Value) -> FormatInfo:
    """A PCM format with only its format keys, each in the form libpulse writes: anything
    else is denied (a rate of 0 made PipeWire's pulse server divide by zero)."""
    if not isinstance(value, FormatInfo) or value.encoding != PCM:
        raise _Denied()
    kept = filter_properties(value.properties, FORMAT_PROPERTIES)
    for key, data in kept:
        text = data[:-1].decode()
        if _FORMAT_VALUE[key].fullmatch(text) is None or (
                key == "format.rate" and int(text) > MAX_RATE):
            raise _Denied()
    return FormatInfo(PCM, kept)


class _Denied(Exception):
    """Answered "access denied"; the connection goes on."""


class _Missing(Exception):
    """Answered "no such entity"."""


@dataclass
class _Stream:
    index: int  # its sink input or source output
    frame_size: int
    carry: bytes = b""  # of a playback stream: the start of a frame whose end is to come
    deleting: bool = False  # its deletion was sent and is not answered yet


_CREATES = (Command.CREATE_PLAYBACK_STREAM, Command.CREATE_RECORD_STREAM)


@dataclass
class Outcome:
    """What one packet of the sandbox's becomes."""

    to_server: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)
    # It asks the server for a new stream (paced by the proxy: soundproxy.StreamPace).
    creates: bool = False


@dataclass
class SoundFilter:
    """One sandbox connection's rules and bookkeeping. from_client runs in one thread and
    from_server in another: the shared bookkeeping is under the lock."""

    recording: bool
    cookie: bytes
    lookup_source: SourceLookup
    identity: str  # the client's and its streams' application.id, e.g. "sandboxapp.firefox"
    version: int | None = None  # negotiated, once the server has answered the handshake
    lock: threading.Lock = field(default_factory=threading.Lock)
    _offered: int = 0
    # Requests by tag: the command, and the channel a deletion names.
    _pending: dict[int, tuple[Command, int | None]] = field(default_factory=dict)
    _playback: dict[int, _Stream] = field(default_factory=dict)  # by channel
    _records: dict[int, _Stream] = field(default_factory=dict)
    # Sink inputs and source outputs that were its own, the latest first: only their end is
    # still told.
    _ended: dict[tuple[int, int], None] = field(default_factory=dict)
    _client: int | None = None
    _named: bool = False  # its client properties (and so its identity) were sent

    # -- the sandbox's packets ---------------------------------------------------------------

    def handshake(self, head: bytes, payload: bytes) -> bytes:
        """The sandbox's first packet, which must be its handshake: the one sent on with the
        user's cookie, no shared memory, and a version this filter knows."""
        channel = DESCRIPTOR.unpack(head)[1]
        values = self._control(channel, payload)
        if (values[0] != Command.AUTH or signature(values[2:]) != "Lx"
                or not isinstance(values[2], int)):
            raise Refused("the first packet is not a handshake")
        tag, offered = values[1], values[2] & VERSION_MASK
        assert isinstance(tag, int)
        if offered < MIN_VERSION:
            raise Refused(f"protocol version {offered} is older than {MIN_VERSION}")
        with self.lock:
            self._offered = min(offered, MAX_VERSION)
            self._pending[tag] = (Command.AUTH, None)
        return control_packet([int(Command.AUTH), tag, self._offered, Arbitrary(self.cookie)])

    def from_client(self, head: bytes, payload: bytes) -> Outcome:
        _, channel, offset_high, offset_low, flags = DESCRIPTOR.unpack(head)
        if self.version is None:
            raise Refused("a packet before the handshake's answer")
        if channel != CONTROL_CHANNEL:
            return self._audio(channel, offset_high, offset_low, flags, payload)
        values = self._control(channel, payload)
        command, tag = values[0], values[1]
        assert isinstance(command, int) and isinstance(tag, int)
        with self.lock:
            if tag in self._pending:
                raise Refused(f"tag {tag} reused while its request is pending")
            if len(self._pending) >= MAX_PENDING:
                raise Refused("too many requests pending")
        try:
            arguments = self._allowed(command, values[2:])
        except _Denied:
            return Outcome(to_client=[error_packet(tag, ErrorCode.ACCESS)])
        except _Missing:
            return Outcome(to_client=[error_packet(tag, ErrorCode.NOENTITY)])
        with self.lock:
            channel = None
            if command == Command.SET_CLIENT_NAME:
                self._named = True
            elif command in _DELETES:
                channel = arguments[0]
                assert isinstance(channel, int)
                self._streams_of(Command(command))[channel].deleting = True
            self._pending[tag] = (Command(command), channel)
        return Outcome(to_server=[control_packet([command, tag, *arguments])],
                       creates=command in _CREATES)

    @staticmethod
    def _control(channel: int, payload: bytes) -> list[Value]:
        if channel != CONTROL_CHANNEL:
            raise Refused("audio before the handshake")
        try:
            values = decode(payload)
        except PulseError as exc:
            raise Refused(str(exc)) from None
        if (len(values) < 2 or not isinstance(values[0], int) or isinstance(values[0], bool)
                or not isinstance(values[1], int) or isinstance(values[1], bool)):
            raise Refused("a command that is not one")
        return values

    def _allowed(self, number: int, arguments: list[Value]) -> list[Value]:
        """The arguments to send on, rewritten; _Denied where the command is not let through."""
        assert self.version is not None
        if number == Command.AUTH:
            raise Refused("a second handshake")
        try:
            command = Command(number)
        except ValueError:
            raise _Denied() from None
        shapes = _PLAYBACK | (_RECORDING if self.recording else {})
        if command not in shapes:
            raise _Denied()
        if re.fullmatch(shapes[command](self.version), signature(arguments)) is None:
            raise Refused(f"{command.name} not in the shape of protocol {self.version}")
        if command != Command.SET_CLIENT_NAME and not self._named:
            # libpulse names its client first: until then a stream would have no identity.
            raise _Denied()
        if command in _BY_INPUT or command in _BY_OUTPUT:
            streams = self._playback if command in _BY_INPUT else self._records
            with self.lock:
                if all(stream.index != arguments[0] or stream.deleting
                       for stream in streams.values()):
                    raise _Denied()
        if command in _BY_PLAYBACK_CHANNEL or command in _BY_RECORD_CHANNEL:
            channel = arguments[0]
            assert isinstance(channel, int)
            with self.lock:
                stream = self._streams_of(command).get(channel)
                if stream is None or stream.deleting:
                    raise _Missing()  # what the server says of a channel it does not have
        if command == Command.SET_CLIENT_NAME:
            return [self._client_properties(arguments[0])]
        if command == Command.UPDATE_CLIENT_PROPLIST:
            return [arguments[0], self._client_properties(arguments[1])]
        if command == Command.REMOVE_CLIENT_PROPLIST:
            return _removable(arguments, CLIENT_PROPERTIES - _MARKED)
        if command == Command.REMOVE_PLAYBACK_STREAM_PROPLIST:
            return [arguments[0], *_removable(arguments[1:], STREAM_PROPERTIES - _MARKED)]
        if command == Command.REMOVE_RECORD_STREAM_PROPLIST:
            return [arguments[0], *_removable(arguments[1:], STREAM_PROPERTIES - _MARKED)]
        if command == Command.UPDATE_PLAYBACK_STREAM_PROPLIST:
            return [arguments[0], arguments[1], self._stream_properties(arguments[2], _INPUT)]
        if command == Command.UPDATE_RECORD_STREAM_PROPLIST:
            return [arguments[0], arguments[1], self._stream_properties(arguments[2], _OUTPUT)]
        if command in (Command.SET_PLAYBACK_STREAM_NAME, Command.SET_RECORD_STREAM_NAME):
            name = arguments[1]
            if not isinstance(name, str) or not _text_value("media.name",
                                                           text_property(name)):
                raise _Denied()
            return arguments
        if command == Command.CREATE_PLAYBACK_STREAM:
            return self._create_playback(arguments)
        if command == Command.CREATE_RECORD_STREAM:
            return self._create_record(arguments)
        return arguments

    def _streams_of(self, command: Command) -> dict[int, _Stream]:
        """The connection's streams of the kind a command addresses by channel."""
        return self._playback if command in _BY_PLAYBACK_CHANNEL else self._records

    def _named_as_sandbox(self, kept: Proplist) -> Proplist:
        """The kept properties with application.name marked as the sandbox's: PipeWire names a
        stream's node after it, and a program that asks for a device by that name would get
        the sandbox's stream; in the user's mixer it says where it comes from."""
        given = dict(kept).get("application.name", b"")[:-1].decode()
        name = f"{given} ({self.identity})" if given else self.identity
        return (*((key, data) for key, data in kept if key != "application.name"),
                ("application.name", text_property(name)),
                (IDENTITY, text_property(self.identity)))

    def _client_properties(self, value: Value) -> Proplist:
        assert isinstance(value, tuple)
        return self._named_as_sandbox(filter_properties(value, CLIENT_PROPERTIES))

    def _stream_properties(self, value: Value, kind: str) -> Proplist:
        """The allowed keys, and the sandbox's identity in the keys that file the stream's
        saved volume and device: a property update that replaces the whole list (its SET
        mode) keeps them too."""
        assert isinstance(value, tuple)
        return (*self._named_as_sandbox(filter_properties(value, STREAM_PROPERTIES)),
                (RESTORE_ID, text_property(f"{kind}-by-application-id:{self.identity}")))

    def _streams(self, created: Command, live: int, limit: int) -> None:
        with self.lock:
            pending = sum(1 for command, _ in self._pending.values() if command == created)
        if live + pending >= limit:
            raise _Denied()

    def _create_playback(self, arguments: list[Value]) -> list[Value]:
        self._streams(Command.CREATE_PLAYBACK_STREAM, len(self._playback),
                      MAX_PLAYBACK_STREAMS)
        if not valid_spec(arguments[0]):
            raise _Denied()
        out = list(arguments)
        out[_PLAYBACK_PROPLIST] = self._stream_properties(arguments[_PLAYBACK_PROPLIST],
                                                          _INPUT)
        if len(out) > _PLAYBACK_PASSTHROUGH and out[_PLAYBACK_PASSTHROUGH] is True:
            raise _Denied()
        if len(out) > _PLAYBACK_FORMATS:
            formats = _formats(arguments, _PLAYBACK_FORMATS)
            out[_PLAYBACK_FORMATS + 1:_PLAYBACK_FORMATS + 1 + len(formats)] = formats
        return out

    def _create_record(self, arguments: list[Value]) -> list[Value]:
        self._streams(Command.CREATE_RECORD_STREAM, len(self._records), MAX_RECORD_STREAMS)
        if not valid_spec(arguments[0]):
            raise _Denied()
        out = list(arguments)
        if arguments[_RECORD_DIRECT_ON_INPUT] != INVALID_INDEX:
            raise _Denied()  # it would record another program's stream, whatever it plays
        index, name = arguments[_RECORD_SOURCE_INDEX], arguments[_RECORD_SOURCE_NAME]
        assert isinstance(index, int) and (name is None or isinstance(name, str))
        if index == INVALID_INDEX and name is None:
            name = "@DEFAULT_SOURCE@"
        source = self.lookup_source(index, name)
        if source is None:
            raise _Missing()
        if source.is_monitor:
            raise _Denied()  # a monitor records what the desktop plays
        out[_RECORD_SOURCE_INDEX], out[_RECORD_SOURCE_NAME] = source.index, None
        # Not moved later to another source, which may be a monitor (when its own goes away,
        # the server would move it to the default one).
        out[_RECORD_NO_MOVE] = True
        out[_RECORD_PROPLIST] = self._stream_properties(arguments[_RECORD_PROPLIST], _OUTPUT)
        if len(out) > _RECORD_FORMATS:
            formats = _formats(arguments, _RECORD_FORMATS)
            out[_RECORD_FORMATS + 1:_RECORD_FORMATS + 1 + len(formats)] = formats
            if out[-1] is True:  # passthrough
                raise _Denied()
        return out

    def _audio(self, channel: int, offset_high: int, offset_low: int, flags: int,
               data: bytes) -> Outcome:
        # libpulse writes at offset 0 with a relative seek (flags 0); other seeks move the
        # server's write index in ways that crashed PulseAudio 16.1 (memblockq.c), and the
        # high flag bits would be shared memory, which was never agreed on.
        if offset_high or offset_low or flags:
            raise Refused("audio with an offset, a seek or shared memory")
        with self.lock:
            stream = self._playback.get(channel)
            if stream is None:
                raise Refused(f"audio for channel {channel}, which is no playback stream of "
                              "this connection's")
            if stream.deleting:
                return Outcome()
            data = stream.carry + data
            whole = len(data) - len(data) % stream.frame_size
            stream.carry = data[whole:]
        if not whole:
            return Outcome()
        return Outcome(to_server=[DESCRIPTOR.pack(whole, channel, 0, 0, 0) + data[:whole]])

    # -- the server's packets ----------------------------------------------------------------

    def from_server(self, head: bytes, payload: bytes) -> bytes | None:
        """The packet as the sandbox gets it, or None where it is not for the sandbox."""
        _, channel, _, _, _ = DESCRIPTOR.unpack(head)
        if channel != CONTROL_CHANNEL:
            return head + payload  # recorded audio of its own streams
        try:
            values = decode(payload)
        except PulseError as exc:
            raise Refused(f"the server: {exc}") from None
        if len(values) < 2 or not isinstance(values[0], int) or not isinstance(values[1], int):
            raise Refused("the server sent a command that is not one")
        command, tag = values[0], values[1]
        if command in (Command.REPLY, Command.ERROR):
            with self.lock:
                pending, channel = self._pending.pop(tag, (None, None))
                if pending in _DELETES and channel is not None:
                    self._end(self._streams_of(pending), channel)
            if pending is None:
                return head + payload
            if command == Command.REPLY:
                return self._reply(pending, values, head, payload)
            if pending == Command.AUTH:
                raise Refused("the server refused the handshake")
            return head + payload
        if command == Command.SUBSCRIBE_EVENT:
            return head + payload if self._event_is_for_client(values[2:]) else None
        if (command in (Command.PLAYBACK_STREAM_KILLED, Command.RECORD_STREAM_KILLED)
                and len(values) > 2 and isinstance(values[2], int)):
            with self.lock:
                self._end(self._playback if command == Command.PLAYBACK_STREAM_KILLED
                          else self._records, values[2])
        return head + payload

    def _end(self, streams: dict[int, _Stream], channel: int) -> None:
        """Forget a stream that is gone (the lock held): its channel and its sink input or
        source output may be given to another stream, another program's too."""
        stream = streams.pop(channel, None)
        if stream is not None:
            facility = _SINK_INPUT if streams is self._playback else _SOURCE_OUTPUT
            self._ended[(facility, stream.index)] = None
            if len(self._ended) > MAX_ENDED:
                del self._ended[next(iter(self._ended))]

    def _reply(self, command: Command, values: list[Value], head: bytes,
               payload: bytes) -> bytes:
        fields = values[2:]
        if command == Command.AUTH:
            if not fields or not isinstance(fields[0], int):
                raise Refused("the server's handshake has no version")
            version = min(self._offered, fields[0] & VERSION_MASK)
            if version < MIN_VERSION:
                raise Refused(f"the server speaks protocol {version}")
            self.version = version
            # Each side speaks the version the other one named (protocol-native.c, context.c):
            # the sandbox is told the one the server was told. Shared memory and memfd are off
            # whatever the server offers.
            return control_packet([values[0], values[1], version, *fields[1:]])
        with self.lock:
            if command == Command.SET_CLIENT_NAME and fields and isinstance(fields[0], int):
                self._client = fields[0]
            elif command in (Command.CREATE_PLAYBACK_STREAM, Command.CREATE_RECORD_STREAM):
                playback = command == Command.CREATE_PLAYBACK_STREAM
                channel, index, spec = _created(
                    fields, _REPLY_PLAYBACK_SPEC if playback else _REPLY_RECORD_SPEC)
                frame = spec.frame_size
                if frame is None:
                    raise Refused("the server made a stream of no known sample format")
                if channel in self._playback or channel in self._records:
                    raise Refused(f"the server gave channel {channel} to a second stream")
                (self._playback if playback else self._records)[channel] = _Stream(index, frame)
                facility = _SINK_INPUT if playback else _SOURCE_OUTPUT
                self._ended.pop((facility, index), None)
        return head + payload

    def _event_is_for_client(self, fields: list[Value]) -> bool:
        if len(fields) != 2 or not isinstance(fields[0], int):
            return False
        facility, index = fields[0] & _FACILITY_MASK, fields[1]
        if not isinstance(index, int):
            return False
        if facility in (_SINK, _SOURCE, _SERVER):
            return True
        with self.lock:
            if facility in (_SINK_INPUT, _SOURCE_OUTPUT):
                streams = self._playback if facility == _SINK_INPUT else self._records
                if any(stream.index == index for stream in streams.values()):
                    return True
                # The end of one that was its own, told once: the number is free again.
                if fields[0] & _TYPE_MASK == _REMOVE and (facility, index) in self._ended:
                    del self._ended[(facility, index)]
                    return True
                return False
            return facility == _CLIENT and index == self._client


def _removable(keys: list[Value], allowed: frozenset[str]) -> list[Value]:
    """Of the keys a removal names (ending with a null), those it may remove: never the
    identity, nor a key the server set (PipeWire's target of a record stream, say)."""
    if not keys or keys[-1] is not None:
        raise Refused("a list of keys to remove without its end")
    return [key for key in keys[:-1] if key in allowed] + [None]


def _formats(arguments: list[Value], at: int) -> list[Value]:
    """The formats that follow their count at `at`, each PCM with only its format keys."""
    count = arguments[at]
    assert isinstance(count, U8)
    formats = arguments[at + 1:at + 1 + count.value]
    if len(formats) != count.value or any(not isinstance(f, FormatInfo) for f in formats):
        raise Refused("a stream's formats are not as many as it says")
    return [_filter_format(f) for f in formats]


def _created(fields: list[Value], spec_at: int) -> tuple[int, int, SampleSpec]:
    """(channel, sink input or source output, sample spec) from a creation's reply."""
    if len(fields) <= spec_at:
        raise Refused("the server's answer to a stream's creation is too short")
    channel, index, spec = fields[0], fields[1], fields[spec_at]
    if not isinstance(channel, int) or not isinstance(index, int) or not isinstance(
            spec, SampleSpec):
        raise Refused("the server's answer to a stream's creation is not one")
    return channel, index, spec
