"""The launcher as a client of the desktop's own session manager (XSMP, through libSM).

A logout asks every program of the session to save and quit (SaveYourself with shutdown, then
Die) and waits for them to go before the session, and its display, end. The launcher registers
there while its sandbox runs: on Die it stops the sandbox as any stop does (SIGHUP, as the
logout sends later: its program is asked to quit first, through the sandbox's own session
manager), and its connection closes only once the sandbox has ended, which the session manager
waits for. It has nothing of its own to save, and asks never to be restarted.

libSM is the client side of the field (Firefox loads it too); the desktop's session manager is
the user's own, not the sandbox's. Where there is none (SESSION_MANAGER unset, or it does not
answer), nothing is registered and nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

SAVE_YOURSELF = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_int, ctypes.c_int, ctypes.c_int)
SIMPLE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
ALL_CALLBACKS = 0b1111  # SaveYourself, Die, SaveComplete, ShutdownCancelled
RESTART_NEVER = 3  # SmRestartNever
# A session manager answers a new client at once; one that has not within this is not waited
# for (the launch goes on unregistered).
CONNECT_TIMEOUT = 2.0
# libICE's and libSM's own handlers of a broken connection or a protocol error exit() the
# process: the launcher's, without taking back its grants. Errors end the connection instead.
IO_ERROR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
PROTOCOL_ERROR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_QUIET_IO = IO_ERROR(lambda _conn: None)
_QUIET_PROTOCOL = PROTOCOL_ERROR(lambda *_args: None)


class Callback(ctypes.Structure):
    _fields_ = [("callback", ctypes.c_void_p), ("client_data", ctypes.c_void_p)]


class Callbacks(ctypes.Structure):
    _fields_ = [("save_yourself", Callback), ("die", Callback),
                ("save_complete", Callback), ("shutdown_cancelled", Callback)]


class _PropValue(ctypes.Structure):
    _fields_ = [("length", ctypes.c_int), ("value", ctypes.c_void_p)]


class _Prop(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("type", ctypes.c_char_p),
                ("num_vals", ctypes.c_int), ("vals", ctypes.POINTER(_PropValue))]


def libraries() -> tuple[Any, Any]:
    """libSM and libICE, their functions typed; OSError where they are not installed."""
    sm = ctypes.CDLL("libSM.so.6")
    ice = ctypes.CDLL("libICE.so.6")
    sm.SmcOpenConnection.restype = ctypes.c_void_p
    sm.SmcOpenConnection.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                                     ctypes.c_int, ctypes.c_ulong, ctypes.POINTER(Callbacks),
                                     ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                                     ctypes.c_int, ctypes.c_char_p]
    sm.SmcSaveYourselfDone.argtypes = [ctypes.c_void_p, ctypes.c_int]
    sm.SmcSetProperties.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                    ctypes.POINTER(ctypes.POINTER(_Prop))]
    sm.SmcGetIceConnection.restype = ctypes.c_void_p
    sm.SmcGetIceConnection.argtypes = [ctypes.c_void_p]
    sm.SmcCloseConnection.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    ice.IceConnectionNumber.argtypes = [ctypes.c_void_p]
    ice.IceProcessMessages.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    ice.IceSetIOErrorHandler.argtypes = [IO_ERROR]
    ice.IceSetIOErrorHandler.restype = ctypes.c_void_p
    ice.IceSetErrorHandler.argtypes = [PROTOCOL_ERROR]
    ice.IceSetErrorHandler.restype = ctypes.c_void_p
    sm.SmcSetErrorHandler.argtypes = [PROTOCOL_ERROR]
    sm.SmcSetErrorHandler.restype = ctypes.c_void_p
    ice.IceSetIOErrorHandler(_QUIET_IO)
    ice.IceSetErrorHandler(_QUIET_PROTOCOL)
    sm.SmcSetErrorHandler(_QUIET_PROTOCOL)
    return sm, ice


class DesktopSession:
    """Registered with the desktop's session manager at address, until close()."""

    def __init__(self, address: str, argv: Sequence[str]) -> None:
        self.sm, self.ice = libraries()
        self.died = threading.Event()

        def save_yourself(conn: int, _data: int, _kind: int, _shutdown: int, _interact: int,
                          _fast: int) -> None:
            # Nothing of the launcher's to save: its program saves as it quits.
            self.sm.SmcSaveYourselfDone(conn, 1)

        def die(_conn: int, _data: int) -> None:
            self.died.set()
            # The stop every logout ends in, now, while the display is still there.
            os.kill(os.getpid(), signal.SIGHUP)

        def nothing(_conn: int, _data: int) -> None:
            pass

        # Kept referenced: libSM calls them for as long as the connection lives.
        self._functions = (SAVE_YOURSELF(save_yourself), SIMPLE(die), SIMPLE(nothing),
                           SIMPLE(nothing))
        callbacks = Callbacks(*(Callback(ctypes.cast(f, ctypes.c_void_p).value, None)
                                for f in self._functions))
        client_id = ctypes.c_char_p()
        error = ctypes.create_string_buffer(256)
        self.conn = self.sm.SmcOpenConnection(address.encode(), None, 1, 0, ALL_CALLBACKS,
                                              ctypes.byref(callbacks), None,
                                              ctypes.byref(client_id), len(error), error)
        if not self.conn:
            raise ConnectionError(error.value.decode(errors="replace"))
        self._set_properties(argv)
        self.wake_read, self.wake_write = os.pipe2(os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name="desktop session")
        self.thread.start()

    def _set_properties(self, argv: Sequence[str]) -> None:
        """The properties XSMP requires of every client, and never to be restarted."""
        held: list[Any] = []  # what the properties point at, alive until they are sent

        def prop(name: bytes, kind: bytes, values: Sequence[bytes]) -> Any:
            vals = (_PropValue * len(values))()
            for index, value in enumerate(values):
                buffer = ctypes.create_string_buffer(value, len(value))
                held.append(buffer)
                vals[index] = _PropValue(len(value), ctypes.cast(buffer, ctypes.c_void_p))
            held.append(vals)
            made = _Prop(name, kind, len(values), vals)
            held.append(made)
            return ctypes.pointer(made)

        command = [word.encode() for word in argv]
        props = [prop(b"Program", b"ARRAY8", command[:1]),
                 prop(b"UserID", b"ARRAY8", [str(os.getuid()).encode()]),
                 prop(b"RestartCommand", b"LISTofARRAY8", command),
                 prop(b"CloneCommand", b"LISTofARRAY8", command),
                 prop(b"RestartStyleHint", b"CARD8", [bytes([RESTART_NEVER])])]
        array = (ctypes.POINTER(_Prop) * len(props))(*props)
        self.sm.SmcSetProperties(self.conn, len(props), array)

    def _serve(self) -> None:
        """libSM's messages, handled as they come, until close() (or the manager goes)."""
        ice = self.sm.SmcGetIceConnection(self.conn)
        fd = self.ice.IceConnectionNumber(ice)
        while True:
            ready, _, _ = select.select([fd, self.wake_read], [], [])
            if self.wake_read in ready:
                return
            if self.ice.IceProcessMessages(ice, None, None) != 0:
                return  # the manager closed the connection, or it broke

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_write, b"x")
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.sm.SmcCloseConnection(self.conn, 0, None)
        for fd in (self.wake_read, self.wake_write):
            os.close(fd)


@contextlib.contextmanager
def registered(environ: Mapping[str, str], argv: Sequence[str]) -> Iterator[DesktopSession | None]:
    """Registered with the desktop's session manager (SESSION_MANAGER) while the block runs;
    None where there is none to register with."""
    address = environ.get("SESSION_MANAGER")
    session = _connect(address, argv) if address else None
    try:
        yield session
    finally:
        if session is not None:
            session.close()


def _connect(address: str, argv: Sequence[str]) -> DesktopSession | None:
    """A registration made within CONNECT_TIMEOUT, else None: libSM's connect waits as long as
    the manager makes it (one made later is closed at once)."""
    made: list[DesktopSession] = []
    lock = threading.Lock()
    late = threading.Event()

    def connect() -> None:
        try:
            session = DesktopSession(address, argv)
        except (OSError, ConnectionError):
            return
        with lock:
            if late.is_set():
                session.close()
            else:
                made.append(session)

    connecting = threading.Thread(target=connect, daemon=True, name="desktop session: connect")
    connecting.start()
    connecting.join(CONNECT_TIMEOUT)
    with lock:
        late.set()
        return made[0] if made else None
