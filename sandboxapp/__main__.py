from __future__ import annotations

from sandboxapp.cli import main

raise SystemExit(main())
