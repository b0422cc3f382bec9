"""The control channel between a desktop user's launcher and the root side of its launch (the
privileged helper, through sudo, and the supervisor in it): a Unix SOCK_SEQPACKET socket pair,
the helper's standard input. One packet is one message, so a message is never read in part or
run into the next, and file descriptors travel beside a message (SCM_RIGHTS), which a pipe
cannot carry.

The launcher sends, in this order: its request (the JSON of features/request.py, with the
files it hands the sandbox beside it), "open" once the grants are made (the app's gate opens),
"stop SECONDS" when the launch is asked to stop. Its end closing means it gave up, or is gone:
the root side stops the app. While the sandbox runs, "file NAME" hands it the file beside the
message (one the user chose), and the root side answers "handed PATH" or "refused WHY".
"""

from __future__ import annotations

import array
import contextlib
import enum
import os
import socket
from dataclasses import dataclass, field

from sandboxapp.errors import ExitStatus, SandboxError

# A request at its largest (features/request.py refuses a longer one) and its word.
MAX_MESSAGE = (1 << 16) + 64
MAX_FDS = 64  # descriptors beside one message


class Word(enum.Enum):
    """What a message says; its first word."""

    REQUEST = "request"  # the helper's request, as JSON
    OPEN = "open"  # the grants are made: open the app's gate
    STOP = "stop"  # stop the app, with this many seconds' grace
    FILE = "file"  # hand the running sandbox this file (its name inside; the file beside it)
    # The root side's answers to FILE, to the launcher.
    HANDED = "handed"  # the file's path inside
    REFUSED = "refused"  # why it was not handed


# The words whose message may carry file descriptors: the files the request hands the sandbox
# at its start, open for reading, in the order of its "files". Descriptors beside any other
# are closed and the message refused.
CARRIES_FDS: frozenset[Word] = frozenset({Word.REQUEST, Word.FILE})


@dataclass(frozen=True)
class Message:
    word: Word
    text: str = ""
    fds: tuple[int, ...] = field(default=())


def malformed(what: str) -> SandboxError:
    return SandboxError(f"a control message to the privileged helper is malformed: {what}",
                        hint="the helper takes messages from sandboxapp's launcher only",
                        status=ExitStatus.USAGE)


def parse(data: bytes, fds: tuple[int, ...]) -> Message:
    """A message from the bytes of one packet and the descriptors beside it (closed, when the
    message is refused)."""
    try:
        head, _, rest = data.partition(b" ")
        try:
            word = Word(head.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise malformed(f"unknown word {head[:20]!r}") from None
        if fds and word not in CARRIES_FDS:
            raise malformed(f"{word.value!r} carries no file descriptors")
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("it is not UTF-8") from None
        if (word is Word.OPEN) != (text == ""):
            raise malformed(f"{word.value!r} with the wrong arguments")
        if word is Word.FILE and len(fds) != 1:
            raise malformed("'file' comes with one file beside it")
        return Message(word, text, fds)
    except SandboxError:
        for fd in fds:
            os.close(fd)
        raise


class ControlChannel:
    """One end of the channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[ControlChannel, socket.socket]:
        """The launcher's end, and the socket the helper gets as its input."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(mine), theirs

    @classmethod
    def from_fd(cls, fd: int) -> ControlChannel:
        """The helper's end, its input: refused when that is not a channel's socket."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            raise malformed("the input is not a socket") from None
        if (sock.family, sock.type) != (socket.AF_UNIX, socket.SOCK_SEQPACKET):
            sock.detach()
            raise malformed("the input is not a control channel")
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, word: Word, text: str = "", fds: tuple[int, ...] = ()) -> None:
        """Send a message; a channel whose other end is gone raises OSError."""
        data = (f"{word.value} {text}" if text else word.value).encode()
        if len(data) > MAX_MESSAGE or len(fds) > MAX_FDS:
            raise SandboxError(f"a {word.value} message is too large for the control channel",
                               status=ExitStatus.LAUNCHER)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], ancillary)

    def receive(self) -> Message | None:
        """The next message (blocking); None when the other end has closed. A message that is
        not one of Word's, cut short, or with descriptors it may not carry is refused."""
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(
                MAX_MESSAGE + 1, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize),
                socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            return None
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                received = array.array("i")
                received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not data and not fds:
            return None
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
            for fd in fds:
                os.close(fd)
            raise malformed(f"it is longer than {MAX_MESSAGE} bytes, or carries more than "
                            f"{MAX_FDS} descriptors")
        return parse(data, tuple(fds))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
