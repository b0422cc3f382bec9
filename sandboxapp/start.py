"""The `sandboxapp` command's entry point. A launch root has made before has its container
started (prestart.py) before the command line and the rest of sandboxapp are loaded."""

from __future__ import annotations

import os
import sys


def entry() -> None:
    words = sys.argv[1:]
    prestarted = None
    if words[:1] == ["run"] and os.geteuid() == 0:
        from sandboxapp import prestart

        prestarted = prestart.attempt(words[1:], os.environ)
    try:
        from sandboxapp.cli import main

        status = main(words, prestarted=prestarted)
    finally:
        if prestarted is not None and not prestarted.adopted:
            prestarted.discard()
    from sandboxapp.errors import finish

    finish(status)
