"""The sound proxy's rules, packet by packet (no sockets, no server): what passes, rewritten,
and what is refused."""

from __future__ import annotations

import pytest

from sandboxapp.host.pulsewire import (
    DESCRIPTOR,
    INVALID_INDEX,
    U8,
    U64,
    Arbitrary,
    ChannelMap,
    ChannelVolumes,
    Command,
    ErrorCode,
    FormatInfo,
    SampleSpec,
    Value,
    control_packet,
    decode,
    proplist,
)
from sandboxapp.host.soundfilter import (
    MAX_VERSION,
    Outcome,
    Refused,
    SoundFilter,
    SourceInfo,
)

COOKIE = bytes(range(256))
S16_STEREO = SampleSpec(3, 2, 44100)
SOURCES = {1: SourceInfo(1, "sink.monitor", 0), 2: SourceInfo(2, "mic", INVALID_INDEX)}
DEFAULT_SOURCE = {"now": 1}


def lookup(index: int, name: str | None) -> SourceInfo | None:
    if index != INVALID_INDEX:
        return SOURCES.get(index)
    if name == "@DEFAULT_SOURCE@":
        return SOURCES[DEFAULT_SOURCE["now"]]
    return next((s for s in SOURCES.values() if s.name == name), None)


def split(packet: bytes) -> tuple[bytes, bytes]:
    return packet[:20], packet[20:]


def audio(channel: int, data: bytes, offset: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
    return DESCRIPTOR.pack(len(data), channel, offset >> 32, offset & 0xFFFFFFFF, flags), data


def values_of(packet: bytes) -> list[Value]:
    return decode(packet[20:])


def create_playback(properties: dict[str, str], formats: list[FormatInfo] | None = None,
                    passthrough: bool = False) -> list[Value]:
    formats = formats if formats is not None else [FormatInfo(1, proplist({
        "format.sample_format": '"s16le"', "format.rate": "44100", "format.channels": "2"}))]
    return [S16_STEREO, ChannelMap(b"\x01\x02"), INVALID_INDEX, None, INVALID_INDEX, False,
            INVALID_INDEX, INVALID_INDEX, INVALID_INDEX, 0, ChannelVolumes((0x10000, 0x10000)),
            *[False] * 7, False, False, proplist(properties), False, False, False, False,
            False, False, passthrough, U8(len(formats)), *formats]


def create_record(index: int = INVALID_INDEX, name: str | None = None,
                  direct_on: int = INVALID_INDEX) -> list[Value]:
    return [S16_STEREO, ChannelMap(b"\x01\x02"), index, name, INVALID_INDEX, False,
            INVALID_INDEX, *[False] * 7, False, False, proplist({"media.name": "rec"}),
            direct_on, False, False, False, U8(0), ChannelVolumes((0x10000, 0x10000)),
            False, False, False, False, False]


class Talk:
    """A filter after a completed handshake at protocol 35."""

    def __init__(self, recording: bool = False, named: bool = True) -> None:
        self.rules = SoundFilter(recording, COOKIE, lookup, "sandboxapp.test")
        sent = self.rules.handshake(*split(control_packet(
            [int(Command.AUTH), 1, 0xC0000000 | 35, Arbitrary(bytes(256))])))
        self.handshake = values_of(sent)
        answer = self.rules.from_server(*split(control_packet(
            [int(Command.REPLY), 1, 0x80000000 | 35])))
        assert answer is not None
        self.auth_answer = values_of(answer)
        if named:  # as libpulse does first
            self.forwarded(Command.SET_CLIENT_NAME, 100, proplist({"application.name": "t"}))
            self.reply(100, 9)

    def send(self, command: int, tag: int, *arguments: Value) -> Outcome:
        return self.rules.from_client(*split(control_packet([command, tag, *arguments])))

    def reply(self, tag: int, *fields: Value) -> bytes | None:
        return self.rules.from_server(*split(control_packet([int(Command.REPLY), tag,
                                                             *fields])))

    def forwarded(self, command: int, tag: int, *arguments: Value) -> list[Value]:
        outcome = self.send(command, tag, *arguments)
        assert outcome.to_client == [] and len(outcome.to_server) == 1, outcome
        return values_of(outcome.to_server[0])

    def denied(self, command: int, tag: int, *arguments: Value) -> int:
        outcome = self.send(command, tag, *arguments)
        assert outcome.to_server == [] and len(outcome.to_client) == 1, outcome
        answer = values_of(outcome.to_client[0])
        assert answer[:2] == [int(Command.ERROR), tag]
        code = answer[2]
        assert isinstance(code, int)
        return code

    def own_stream(self, tag: int = 10, channel: int = 0, sink_input: int = 42) -> None:
        self.forwarded(Command.CREATE_PLAYBACK_STREAM, tag, *create_playback({}))
        self.reply(tag, channel, sink_input, 4096, 1, 2, 3, 4, S16_STEREO,
                   ChannelMap(b"\x01\x02"), 0, "sink", False, U64(b"U", 0),
                   FormatInfo(1, ()))


def test_the_handshake_goes_with_the_users_cookie_a_known_version_and_no_shared_memory(
        ) -> None:
    talk = Talk()
    assert talk.handshake == [int(Command.AUTH), 1, 35, Arbitrary(COOKIE)]
    assert talk.auth_answer == [int(Command.REPLY), 1, 35]
    rules = SoundFilter(False, COOKIE, lookup, "sandboxapp.test")
    sent = rules.handshake(*split(control_packet([int(Command.AUTH), 1, 99,
                                                  Arbitrary(bytes(256))])))
    assert values_of(sent)[2] == MAX_VERSION
    with pytest.raises(Refused, match="older"):
        rules.handshake(*split(control_packet([int(Command.AUTH), 1, 12,
                                               Arbitrary(bytes(256))])))


def test_modules_and_changes_to_the_server_are_denied_and_never_sent() -> None:
    talk = Talk()
    for command, arguments in ((Command.LOAD_MODULE, ["module-null-sink", ""]),
                               (Command.UNLOAD_MODULE, [0]), (44, ["evil"]), (48, [3]),
                               (49, [3]), (67, [3, 0, None]), (1000, [])):
        assert talk.denied(command, 7, *arguments) == ErrorCode.ACCESS
    assert talk.forwarded(Command.GET_SERVER_INFO, 8) == [int(Command.GET_SERVER_INFO), 8]


def test_property_lists_keep_only_what_a_player_needs_and_the_identity_is_the_sandboxs(
        ) -> None:
    talk = Talk()
    evil = {"application.name": "Firefox", "application.id": "org.gnome.Music",
            "filter.apply": "ladspa-sink",
            "filter.apply.ladspa-sink.parameters": "plugin=/tmp/evil.so label=x",
            "media.role": "phone", "module-stream-restore.id": "x", "node.target": "3",
            "application.process.binary": "../../etc/passwd",
            "application.icon_name": "firefox-esr", "application.process.id": "42"}
    sent = talk.forwarded(Command.SET_CLIENT_NAME, 2, proplist(evil))
    # Its name says whose it is (PipeWire names nodes after it: a program asking for a device
    # of the sandbox's chosen name would get the sandbox's stream).
    assert dict(sent[2]) == {  # type: ignore[arg-type]
        "application.name": b"Firefox (sandboxapp.test)\0",
        "application.icon_name": b"firefox-esr\0",
        "application.process.id": b"42\0", "application.id": b"sandboxapp.test\0"}
    sent = talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 3,
                          *create_playback({"media.name": "tune", **evil}))
    assert dict(sent[2 + 20]) == {  # type: ignore[arg-type]
        "media.name": b"tune\0", "application.name": b"Firefox (sandboxapp.test)\0",
        "application.icon_name": b"firefox-esr\0", "application.process.id": b"42\0",
        "application.id": b"sandboxapp.test\0",
        "module-stream-restore.id": b"sink-input-by-application-id:sandboxapp.test\0"}
    # A property update in SET mode (0), which replaces the whole list, keeps the identity
    # (the client's, and a stream's with its saved volume); removing it is not passed on.
    sent = talk.forwarded(Command.UPDATE_CLIENT_PROPLIST, 4, 0, proplist(evil))
    assert ("application.id", b"sandboxapp.test\0") in sent[3]  # type: ignore[operator]
    sent = talk.forwarded(Command.REMOVE_CLIENT_PROPLIST, 5, "application.id",
                          "application.name", "application.version", "x", None)
    assert sent[2:] == ["application.version", None]
    talk.own_stream(tag=6, channel=3)
    sent = talk.forwarded(Command.UPDATE_PLAYBACK_STREAM_PROPLIST, 7, 3, 0,
                          proplist({"application.name": "Victim"}))
    assert dict(sent[4])["module-stream-restore.id"] == (  # type: ignore[arg-type]
        b"sink-input-by-application-id:sandboxapp.test\0")
    sent = talk.forwarded(Command.REMOVE_PLAYBACK_STREAM_PROPLIST, 8, 3, "application.id",
                          "module-stream-restore.id", "target.object", "media.title", None)
    assert sent[2:] == [3, "media.title", None]


def test_a_value_that_is_no_short_text_is_dropped() -> None:
    talk = Talk()
    entries = (("application.name", b"x" * 600 + b"\0"), ("media.name", b"no end"),
               ("media.title", b"two\0texts\0"), ("media.artist", b"\xff\xfe\0"),
               ("media.icon_name", b"/home/user/icon.png\0"), ("media.language", b"en\0"),
               ("application.process.binary", b"firefox-esr\0"))
    sent = talk.forwarded(Command.UPDATE_CLIENT_PROPLIST, 2, 1, entries)
    assert dict(sent[3]) == {  # type: ignore[arg-type]
        "application.name": b"sandboxapp.test\0", "application.id": b"sandboxapp.test\0"}


def test_formats_keep_their_format_keys_and_only_pcm_passes() -> None:
    talk = Talk()
    pcm = FormatInfo(1, proplist({"format.rate": "44100", "filter.apply": "x"}))
    sent = talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 2, *create_playback({}, [pcm]))
    assert sent[-1] == FormatInfo(1, proplist({"format.rate": "44100"}))
    ac3 = FormatInfo(2, ())
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 3,
                       *create_playback({}, [ac3])) == ErrorCode.ACCESS
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 4,
                       *create_playback({}, passthrough=True)) == ErrorCode.ACCESS


@pytest.mark.parametrize("arguments", [
    [S16_STEREO],                                              # too few
    [*create_playback({}), "extra"],                           # too many
    [*create_playback({})[:28], U8(3), FormatInfo(1, ())],     # fewer formats than it says
    [*create_playback({})[:5], 7, *create_playback({})[6:]],   # a number for a boolean
], ids=["short", "long", "formats", "types"])
def test_a_command_not_in_its_shape_ends_the_connection(arguments: list[Value]) -> None:
    with pytest.raises(Refused):
        Talk().send(Command.CREATE_PLAYBACK_STREAM, 2, *arguments)


def test_only_its_own_streams_sink_input_may_be_set_and_only_from_its_creations_reply(
        ) -> None:
    talk = Talk()
    assert talk.denied(Command.SET_SINK_INPUT_MUTE, 2, 42, True) == ErrorCode.ACCESS
    talk.own_stream(tag=3, sink_input=42)
    assert talk.forwarded(Command.SET_SINK_INPUT_MUTE, 4, 42, True)[2:] == [42, True]
    assert talk.forwarded(Command.GET_SINK_INPUT_INFO, 5, 42)[2:] == [42]
    assert talk.denied(Command.SET_SINK_INPUT_VOLUME, 6, 7,
                       ChannelVolumes((1,))) == ErrorCode.ACCESS


def test_a_failed_creations_tag_makes_nothing_its_own() -> None:
    talk = Talk()
    talk.own_stream(channel=0, sink_input=42)
    talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 3, *create_playback({}))
    talk.rules.from_server(*split(control_packet([int(Command.ERROR), 3, 5])))
    # The same tag again, on a request whose reply carries a value of the client's choosing.
    talk.forwarded(Command.SET_PLAYBACK_STREAM_BUFFER_ATTR, 3, 0, 1000, 77, 1, 1, False,
                   False)
    talk.reply(3, 1000, 77, 1, 1, U64(b"U", 0))
    assert talk.denied(Command.SET_SINK_INPUT_MUTE, 4, 77, True) == ErrorCode.ACCESS


def test_a_tag_reused_while_pending_ends_the_connection() -> None:
    talk = Talk()
    talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 3, *create_playback({}))
    with pytest.raises(Refused, match="reused"):
        talk.send(Command.GET_SERVER_INFO, 3)


def test_audio_goes_only_to_its_own_streams_in_whole_frames_at_offset_zero() -> None:
    talk = Talk()
    with pytest.raises(Refused):
        talk.rules.from_client(*audio(0, b"abcd"))  # no stream yet
    talk.own_stream(channel=0)
    for offset, flags in ((5, 0), (0, 1), (1 << 40, 0), (0, 0x80000000)):
        with pytest.raises(Refused):
            talk.rules.from_client(*audio(0, bytes(8), offset, flags))
    with pytest.raises(Refused):
        talk.rules.from_client(*audio(1, bytes(8)))
    # Frames of 4 bytes: 6 bytes pass as one frame, the rest waits for its end.
    first = talk.rules.from_client(*audio(0, b"abcdef"))
    assert first.to_server == [DESCRIPTOR.pack(4, 0, 0, 0, 0) + b"abcd"]
    second = talk.rules.from_client(*audio(0, b"gh"))
    assert second.to_server == [DESCRIPTOR.pack(4, 0, 0, 0, 0) + b"efgh"]
    assert talk.rules.from_client(*audio(0, b"i")).to_server == []


def test_recording_only_with_microphone_and_never_from_a_monitor() -> None:
    assert Talk().denied(Command.CREATE_RECORD_STREAM, 2, *create_record()) == ErrorCode.ACCESS
    talk = Talk(recording=True)
    assert talk.denied(Command.CREATE_RECORD_STREAM, 2, *create_record(1)) == ErrorCode.ACCESS
    assert talk.denied(Command.CREATE_RECORD_STREAM, 3,
                       *create_record(name="sink.monitor")) == ErrorCode.ACCESS
    assert talk.denied(Command.CREATE_RECORD_STREAM, 4,
                       *create_record(name="nothing")) == ErrorCode.NOENTITY
    # The default source is the monitor: nothing; a microphone: that one, by its index.
    DEFAULT_SOURCE["now"] = 1
    assert talk.denied(Command.CREATE_RECORD_STREAM, 5, *create_record()) == ErrorCode.ACCESS
    DEFAULT_SOURCE["now"] = 2
    sent = talk.forwarded(Command.CREATE_RECORD_STREAM, 6, *create_record())
    assert sent[2 + 2:2 + 4] == [2, None]
    assert sent[2 + 12] is True  # it may not be moved to another source
    sent = talk.forwarded(Command.CREATE_RECORD_STREAM, 7, *create_record(name="mic"))
    assert sent[2 + 2:2 + 4] == [2, None]
    assert talk.denied(Command.CREATE_RECORD_STREAM, 8,
                       *create_record(2, direct_on=42)) == ErrorCode.ACCESS


def test_events_name_only_its_own_client_and_streams() -> None:
    talk = Talk()
    talk.forwarded(Command.SET_CLIENT_NAME, 2, proplist({"application.name": "x"}))
    talk.reply(2, 9)
    talk.own_stream(tag=3, sink_input=42)

    def passed(event: int, index: int) -> bool:
        return talk.rules.from_server(*split(control_packet(
            [int(Command.SUBSCRIBE_EVENT), INVALID_INDEX, event, index]))) is not None

    assert passed(0x00, 1) and passed(0x01, 1) and passed(0x17, 0)  # sink, source, server
    assert passed(0x02, 42) and passed(0x05, 9)                     # its stream, itself
    assert not passed(0x02, 43) and not passed(0x05, 8)             # another's
    assert not passed(0x04, 1) and not passed(0x09, 1)              # modules, cards
    assert not passed(0x03, 42)


def test_nothing_but_the_client_name_before_the_client_is_named() -> None:
    talk = Talk(named=False)
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 2,
                       *create_playback({})) == ErrorCode.ACCESS
    talk.forwarded(Command.SET_CLIENT_NAME, 3, proplist({}))
    talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 4, *create_playback({}))


def test_a_streams_rate_is_not_changed() -> None:
    """PulseAudio 16.1 aborts when a stream not made with a variable rate gets a new one."""
    talk = Talk(recording=True)
    talk.own_stream(channel=0)
    assert talk.denied(74, 2, 0, 22050) == ErrorCode.ACCESS
    assert talk.denied(75, 3, 0, 22050) == ErrorCode.ACCESS


def test_a_connection_holds_a_few_streams() -> None:
    talk = Talk(recording=True)
    DEFAULT_SOURCE["now"] = 2
    for tag in range(1, 9):  # pending creations count
        talk.forwarded(Command.CREATE_PLAYBACK_STREAM, tag, *create_playback({}))
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 9,
                       *create_playback({})) == ErrorCode.ACCESS
    for tag in (10, 11):
        talk.forwarded(Command.CREATE_RECORD_STREAM, tag, *create_record())
    assert talk.denied(Command.CREATE_RECORD_STREAM, 12, *create_record()) == ErrorCode.ACCESS
    # A creation that failed no longer counts.
    talk.rules.from_server(*split(control_packet([int(Command.ERROR), 1, 5])))
    talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 13, *create_playback({}))


@pytest.mark.parametrize("spec", [SampleSpec(3, 2, 0), SampleSpec(3, 0, 44100),
                                  SampleSpec(3, 33, 44100), SampleSpec(13, 2, 44100),
                                  SampleSpec(3, 2, 384001)],
                         ids=["rate-0", "no-channels", "33-channels", "no-format", "fast"])
def test_a_stream_of_a_sample_spec_no_server_can_use_is_denied(spec: SampleSpec) -> None:
    """PipeWire's pulse server divided by a rate of 0 and died."""
    talk = Talk(recording=True)
    DEFAULT_SOURCE["now"] = 2
    playback = create_playback({})
    playback[0] = spec
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 2, *playback) == ErrorCode.ACCESS
    record = create_record()
    record[0] = spec
    assert talk.denied(Command.CREATE_RECORD_STREAM, 3, *record) == ErrorCode.ACCESS


@pytest.mark.parametrize(("key", "value"), [
    ("format.rate", "0"), ("format.rate", "999999"), ("format.rate", "[ 44100, 48000 ]"),
    ("format.channels", "0"), ("format.channels", "64"), ("format.sample_format", "s16le"),
    ("format.sample_format", '"s99le"'), ("format.channel_map", "front-left"),
])
def test_a_format_in_a_form_libpulse_does_not_write_is_denied(key: str, value: str) -> None:
    talk = Talk()
    values = {"format.sample_format": '"s16le"', "format.rate": "44100",
              "format.channels": "2", "format.channel_map": '"front-left,front-right"'}
    good = FormatInfo(1, proplist(values))
    talk.forwarded(Command.CREATE_PLAYBACK_STREAM, 2, *create_playback({}, [good]))
    bad = FormatInfo(1, proplist({**values, key: value}))
    assert talk.denied(Command.CREATE_PLAYBACK_STREAM, 3,
                       *create_playback({}, [bad])) == ErrorCode.ACCESS


def event(facility: int, index: int, kind: int = 0x10) -> tuple[bytes, bytes]:
    return split(control_packet([int(Command.SUBSCRIBE_EVENT), INVALID_INDEX, facility | kind,
                                 index]))


def test_commands_name_only_a_stream_it_owns_and_is_not_deleting() -> None:
    """Only what it owns reaches the server: a channel being deleted may be given to the next
    stream made."""
    talk = Talk()
    for channel in (0, 1, 7):
        assert talk.denied(Command.CORK_PLAYBACK_STREAM, 5, channel, True) == ErrorCode.NOENTITY
        assert talk.denied(Command.DELETE_PLAYBACK_STREAM, 5, channel) == ErrorCode.NOENTITY
    talk.own_stream(tag=10, channel=0, sink_input=42)
    talk.forwarded(Command.CORK_PLAYBACK_STREAM, 11, 0, True)
    talk.reply(11)
    talk.forwarded(Command.DELETE_PLAYBACK_STREAM, 12, 0)
    # Until its deletion is answered, and after: nothing more on it, and no audio passes.
    assert talk.denied(Command.CORK_PLAYBACK_STREAM, 13, 0, True) == ErrorCode.NOENTITY
    assert talk.denied(Command.DELETE_PLAYBACK_STREAM, 14, 0) == ErrorCode.NOENTITY
    assert talk.rules.from_client(*audio(0, bytes(8))) == Outcome()
    talk.reply(12)
    assert talk.denied(Command.FLUSH_PLAYBACK_STREAM, 15, 0) == ErrorCode.NOENTITY
    with pytest.raises(Refused):
        talk.rules.from_client(*audio(0, bytes(8)))
    # The server may give the channel out again: then it is the new stream's.
    talk.own_stream(tag=16, channel=0, sink_input=43)
    talk.forwarded(Command.CORK_PLAYBACK_STREAM, 17, 0, True)


def test_a_sink_input_that_ended_is_no_longer_its_own() -> None:
    """PipeWire gives an ended stream's number to the next stream made, another program's
    too: the sandbox must not reach that one by the number it once had."""
    talk = Talk()
    talk.own_stream(tag=10, channel=0, sink_input=42)
    talk.forwarded(Command.SET_SINK_INPUT_MUTE, 11, 42, True)
    talk.forwarded(Command.DELETE_PLAYBACK_STREAM, 12, 0)
    assert talk.denied(Command.SET_SINK_INPUT_MUTE, 13, 42, True) == ErrorCode.ACCESS
    talk.reply(12)
    assert talk.denied(Command.SET_SINK_INPUT_VOLUME, 14, 42,
                       ChannelVolumes((1, 1))) == ErrorCode.ACCESS
    # Its end is told once; what the number names next is not the sandbox's to hear of.
    assert talk.rules.from_server(*event(2, 42, kind=0x20)) is not None
    assert talk.rules.from_server(*event(2, 42, kind=0x00)) is None
    assert talk.rules.from_server(*event(2, 42, kind=0x20)) is None


def test_a_killed_stream_is_forgotten() -> None:
    talk = Talk()
    talk.own_stream(tag=10, channel=3, sink_input=42)
    talk.rules.from_server(*split(control_packet([int(Command.PLAYBACK_STREAM_KILLED),
                                                  INVALID_INDEX, 3])))
    assert talk.denied(Command.CORK_PLAYBACK_STREAM, 11, 3, True) == ErrorCode.NOENTITY
    assert talk.denied(Command.SET_SINK_INPUT_MUTE, 12, 42, True) == ErrorCode.ACCESS


def test_a_channel_given_to_two_streams_ends_the_connection() -> None:
    talk = Talk()
    talk.own_stream(tag=10, channel=0)
    with pytest.raises(Refused, match="second stream"):
        talk.own_stream(tag=11, channel=0, sink_input=50)
