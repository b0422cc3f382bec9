"""One launch: the session side (launcher.py, making the grants of features/), the root side as
it reaches it (rootside.py: in this process, container.py and join.py, or through the privileged
helper, helperclient.py), supervision (supervisor.py) and recovery; and what acts on launches:
`ps` and `stop` (running.py), `reset` (reset.py)."""
