"""Pristine images: the store (store.py), building them (build.py), updating them and a shell in
them (rework.py), looking inside them (fs.py), Debian's tools (debian.py) and UID blocks
(uidrange.py)."""
