"""A real libSM client (the library Firefox loads), through ctypes: what it registers and hears
from the sandbox's session manager."""

from __future__ import annotations

import ctypes
import select
import time
from dataclasses import dataclass, field

from sandboxapp.host.desktopsession import (
    ALL_CALLBACKS,
    SAVE_YOURSELF,
    SIMPLE,
    Callback,
    Callbacks,
    libraries,
)

SM, ICE = libraries()


@dataclass
class XsmpClient:
    """Connected and registered; heard: what the manager said, in order."""

    address: str
    heard: list[str] = field(default_factory=list)
    answer_saves: bool = True

    def __post_init__(self) -> None:
        def save_yourself(conn: int, data: int, kind: int, shutdown: int, interact: int,
                          fast: int) -> None:
            self.heard.append(f"save-yourself shutdown={shutdown} interact={interact}")
            if self.answer_saves:
                SM.SmcSaveYourselfDone(conn, 1)

        def die(conn: int, data: int) -> None:
            self.heard.append("die")

        def save_complete(conn: int, data: int) -> None:
            self.heard.append("save-complete")

        def cancelled(conn: int, data: int) -> None:
            self.heard.append("shutdown-cancelled")

        # Kept referenced: libSM calls them for as long as the connection lives.
        self._functions = (SAVE_YOURSELF(save_yourself), SIMPLE(die), SIMPLE(save_complete),
                           SIMPLE(cancelled))
        pointers = [ctypes.cast(f, ctypes.c_void_p).value for f in self._functions]
        callbacks = Callbacks(*(Callback(p, None) for p in pointers))
        client_id = ctypes.c_char_p()
        error = ctypes.create_string_buffer(256)
        self.conn = SM.SmcOpenConnection(self.address.encode(), None, 1, 0, ALL_CALLBACKS,
                                         ctypes.byref(callbacks), None,
                                         ctypes.byref(client_id), 256, error)
        if not self.conn:
            raise ConnectionError(f"SmcOpenConnection: {error.value.decode()}")
        self.client_id = client_id.value or b""
        self.ice = SM.SmcGetIceConnection(self.conn)

    def process(self, seconds: float, until: str | None = None) -> bool:
        """Handle what comes for up to seconds; True if the connection is still open."""
        deadline = time.monotonic() + seconds
        fd = ICE.IceConnectionNumber(self.ice)
        while (left := deadline - time.monotonic()) > 0:
            if until is not None and until in self.heard:
                return True
            ready, _, _ = select.select([fd], [], [], left)
            if ready and ICE.IceProcessMessages(self.ice, None, None) != 0:
                return False  # 1: an I/O error, 2: the connection closed
        return True

    def close(self) -> None:
        SM.SmcCloseConnection(self.conn, 0, None)
