"""Pristine images: the store (store.py), building them (build.py), updating them and a shell in
them (rework.py), making one ready before a launch (ready.py) and Debian's tools (debian.py)."""
