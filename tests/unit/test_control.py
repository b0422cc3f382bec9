"""The control channel between the launcher and the privileged helper: messages whole, one at
a time, descriptors beside the words that may carry them, and anything else refused."""

from __future__ import annotations

import array
import os
import socket

import pytest

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.system.control import MAX_MESSAGE, ControlChannel, Message, Word


def _raw(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_messages_arrive_whole_and_in_order() -> None:
    launcher, theirs = ControlChannel.pair()
    helper = ControlChannel(theirs)
    request = '{"action": "launch", "args": ["a b", "c\\nd"]}' + " " * 60000
    launcher.send(Word.REQUEST, request)
    launcher.send(Word.OPEN)
    launcher.send(Word.STOP, "20.0")
    launcher.close()
    assert helper.receive() == Message(Word.REQUEST, request)
    assert helper.receive() == Message(Word.OPEN)
    assert helper.receive() == Message(Word.STOP, "20.0")
    assert helper.receive() is None  # the launcher's end closed
    helper.close()


def test_descriptors_travel_beside_a_word_that_carries_them() -> None:
    """The files a request hands the sandbox travel beside it."""
    launcher, theirs = ControlChannel.pair()
    helper = ControlChannel(theirs)
    read_end, write_end = os.pipe()
    launcher.send(Word.REQUEST, "{}", fds=(write_end,))
    os.close(write_end)
    message = helper.receive()
    assert message is not None and len(message.fds) == 1
    os.write(message.fds[0], b"through")
    os.close(message.fds[0])
    assert os.read(read_end, 16) == b"through"
    os.close(read_end)
    launcher.close()
    helper.close()


@pytest.mark.parametrize(("data", "with_fd", "why"), [
    (b"launch xeyes", False, "unknown word"),
    (b"opened", False, "unknown word"),
    (b"open now", False, "wrong arguments"),
    (b"stop", False, "wrong arguments"),
    (b"request \xff", False, "not UTF-8"),
    (b"stop 5", True, "carries no file descriptors"),
    (b"request " + b"x" * MAX_MESSAGE, False, "longer than"),
])
def test_a_malformed_message_is_refused_and_its_descriptors_closed(
        data: bytes, with_fd: bool, why: str) -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    helper = ControlChannel(theirs)
    read_end, write_end = os.pipe()
    _raw(mine, data, [write_end] if with_fd else None)
    os.close(write_end)
    before = _open_fds()
    with pytest.raises(SandboxError) as raised:
        helper.receive()
    assert why in raised.value.message and raised.value.status == ExitStatus.USAGE
    assert _open_fds() == before  # a descriptor it refused is not kept open
    mine.close()
    assert os.read(read_end, 1) == b""  # every copy of the write end is closed
    os.close(read_end)
    helper.close()


def test_only_a_channel_is_taken_as_the_helpers_input() -> None:
    read_end, write_end = os.pipe()
    with pytest.raises(SandboxError) as raised:
        ControlChannel.from_fd(read_end)
    assert "not a socket" in raised.value.message
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(SandboxError) as raised:
        ControlChannel.from_fd(stream.fileno())
    assert "not a control channel" in raised.value.message
    stream.close()
    os.close(read_end)
    os.close(write_end)
