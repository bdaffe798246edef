#!/usr/bin/env python3
"""HTTP/1.1 pipelining client: writes all requests in ONE send(), then reads
until the server closes (the last request asks for Connection: close).
Usage: pipeline.py PORT PATH..."""
import socket
import sys

port = int(sys.argv[1])
paths = sys.argv[2:]
reqs = []
for i, p in enumerate(paths):
    last = i == len(paths) - 1
    reqs.append(
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: fathom-pipeline\r\n%s\r\n"
        % (p, port, "Connection: close\r\n" if last else "")
    )
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall("".join(reqs).encode())
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.close()
n = data.count(b"HTTP/1.1 ")
print("responses", n)
sys.exit(0 if n >= len(paths) else 1)
