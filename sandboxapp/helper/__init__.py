"""The privileged helper: its client (client.py), its root side (privileged.py), and `setup`,
which installs it (install.py)."""
