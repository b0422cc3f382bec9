"""Stage lines for long jobs (image builds and updates) on the terminal."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from sandboxapp.output import warning_line


class TerminalProgress:
    """Stage lines with elapsed time; on a terminal the current line keeps ticking."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.current: str | None = None
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ticker: threading.Thread | None = None

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"[{seconds // 60:2d}:{seconds % 60:02d}]"

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{self._elapsed()} {text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"{self._elapsed()} {text}\n")
        self.stream.flush()

    def _tick(self) -> None:
        while not self.done.wait(1.0):
            with self.lock:
                if self.current:
                    self._line(self.current, final=False)

    def stage(self, text: str) -> None:
        with self.lock:
            if self.tty and self.current:
                self._line(self.current, final=True)
            self.current = text
            self._line(text, final=not self.tty)
        if self.tty and self.ticker is None:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def warn(self, text: str) -> None:
        with self.lock:
            if self.tty and self.current:
                self.stream.write("\r\033[K")
            self.stream.write(warning_line(text))
            if self.tty and self.current:
                self._line(self.current, final=False)
            self.stream.flush()

    def finish(self, text: str) -> None:
        self.done.set()
        with self.lock:
            if self.tty and self.current:
                self._line(self.current, final=True)
            self.current = None
            self._line(text, final=True)

