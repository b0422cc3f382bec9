from __future__ import annotations

from sandboxapp.cli import entry

entry()
