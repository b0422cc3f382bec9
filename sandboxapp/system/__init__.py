"""The ground floor of a launch: facts about processes and the host, systemd-nspawn's command
line and the UID ranges it maps, the overlay a launch runs on, and the files handed to a running
container (handed.py)."""
