"""File system calls as root on users' paths: the no-follow walk (nofollow.py, safepath.py), the
mount system calls (mounts.py), and tree helpers (util.py)."""
