"""The privileged helper: the root side of a desktop user's launch, reached through sudo
(privileged.py), and `setup`, which installs it (install.py). Its request is features/request.py;
the launcher reaches it through launch/helperclient.py."""
