"""The sound proxy in a process of its own, for the fuzzer to measure (its memory, its
threads) as the launcher's would be: serves SOCKET for the server at SERVER with the cookie in
COOKIE_FILE, recording allowed, until its standard input ends.

    python -m tests.integration.proxy_process SOCKET SERVER COOKIE_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

from sandboxapp.host import soundproxy


def main() -> None:
    socket, server, cookie_file = (Path(arg) for arg in sys.argv[1:4])
    with soundproxy.serving(socket, server, cookie_file.read_bytes(), recording=True,
                            identity="sandboxapp.fuzz"):
        print("ready", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
