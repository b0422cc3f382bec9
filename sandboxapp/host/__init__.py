"""The doors into the host: the X display (x11.py trusted; nested.py, a server of the
sandbox's own), the sound server (sound.py; soundproxy.py serving the rules of soundfilter.py;
pulsewire.py, the protocol), notifications and menu entries."""
