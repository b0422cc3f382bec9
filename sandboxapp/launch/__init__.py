"""One launch: its plan and container spec (plan.py), the root side (container.py: layer, checked
binds, nspawn), the session side (launcher.py), supervision, the ledger of undos and recovery."""
