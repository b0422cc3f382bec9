from __future__ import annotations

from sandboxapp.start import entry

entry()
