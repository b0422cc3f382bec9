"""Pristine images: the store (store.py), building and updating them (build.py), looking inside
them (fs.py), Debian's tools (debian.py) and UID blocks (uidrange.py)."""
