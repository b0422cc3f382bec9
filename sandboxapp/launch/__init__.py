"""One launch: its plan and container spec (plan.py), the root side (container.py: layer, checked
binds, nspawn), the session side (launcher.py, making the grants of features/), supervision, the
ledger of undos (ledger.py, its typed entries in entries.py) and recovery."""
