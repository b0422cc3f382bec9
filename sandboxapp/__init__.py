"""sandboxapp: run desktop programs in throw-away systemd-nspawn containers."""

from __future__ import annotations

__version__ = "0.1.0"
