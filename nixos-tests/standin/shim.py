#!@PYTHON@
# systemctl / systemd-run on a stand-in machine: the request goes to the driver stand-in, which keeps the
# machine's units (nixos-tests/standin/driver.py).
import json
import os
import socket
import sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("@SOCKET@")
s.sendall(json.dumps({"tool": os.path.basename(sys.argv[0]), "args": sys.argv[1:], "env": dict(os.environ)}).encode() + b"\n")
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
answer = json.loads(data)
if answer["out"]:
    print(answer["out"])
sys.exit(answer["code"])
