"""An app inside the sandbox that registers with the session manager SESSION_MANAGER names
(the messages libSM sends, little-endian, no authentication) and marks in /root/data what it
is told and what it gets: `ready` once registered, `told-to-die` on Die, `termed` on SIGTERM.

Usage: xsmpapp.py obey|ignore|stubborn
  obey:     exits 0 a second after Die (Firefox's shutdown takes about that), and on SIGTERM
  ignore:   stays on Die; exits 0 on SIGTERM
  stubborn: stays on Die and on SIGTERM
"""

import os
import signal
import socket
import struct
import sys
import time

DATA = "/root/data"
MODE = sys.argv[1]


def mark(name):
    with open(f"{DATA}/{name}", "a") as out:
        out.write(f"{time.monotonic()}\n")


def on_term(signum, frame):
    mark("termed")
    if MODE != "stubborn":
        sys.exit(0)


signal.signal(signal.SIGTERM, on_term)


def header(major, minor, units, data=b"\0\0"):
    return struct.pack("<BB2sI", major, minor, data, units)


def string(text):
    return struct.pack("<H", len(text)) + text + bytes((4 - (2 + len(text)) % 4) % 4)


VERSION = struct.pack("<HH", 1, 0)
setup_body = bytes(8) + string(b"MIT") + string(b"1.0") + VERSION
setup_body += bytes((8 - len(setup_body) % 8) % 8)
protocol_body = b"\x01\x00" + bytes(6) + string(b"XSMP") + string(b"MIT") + string(b"1.0")
protocol_body += VERSION
protocol_body += bytes((8 - len(protocol_body) % 8) % 8)

path = os.environ["SESSION_MANAGER"].split(":", 1)[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(path)
sock.sendall(header(0, 1, 0) + header(0, 2, len(setup_body) // 8, b"\x01\x00") + setup_body
             + header(0, 7, len(protocol_body) // 8, b"\x01\x00") + protocol_body
             + header(1, 1, 1) + bytes(8))


def receive():
    data = b""
    while len(data) < 8:
        chunk = sock.recv(8 - len(data))
        if not chunk:
            return None, None
        data += chunk
    units = struct.unpack("<I", data[4:])[0]
    body = b""
    while len(body) < units * 8:
        body += sock.recv(units * 8 - len(body))
    return data[0], data[1]


while True:
    major, minor = receive()
    if major is None:
        break
    if (major, minor) == (1, 2):  # RegisterClientReply
        mark("ready")
    elif (major, minor) == (1, 3):  # SaveYourself
        sock.sendall(header(1, 8, 0, b"\x01\x00"))  # SaveYourselfDone, success
    elif (major, minor) == (1, 9):  # Die
        mark("told-to-die")
        if MODE == "obey":
            time.sleep(1)
            sys.exit(0)
while True:
    time.sleep(1)
