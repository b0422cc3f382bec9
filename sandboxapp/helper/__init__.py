"""The privileged helper: the request both sides share (request.py), its client (client.py), its
root side (privileged.py), and `setup`, which installs it (install.py)."""
