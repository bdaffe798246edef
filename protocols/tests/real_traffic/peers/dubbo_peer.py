#!/usr/bin/env python3
"""Dubbo peers. There is no Dubbo server available as a package here, so
`dubbo_peer.py server PORT` is a small responder: it reads each request's
16-byte header and body, decodes service and method (Hessian2 strings) and
answers status 20 with a Hessian2 string value, or status 70
(SERVICE_ERROR) with an error string when the method is "fail".
`dubbo_peer.py client PORT` calls it through the dubbo-ssl-python client
(module dubbo_ssl) and prints one JSON line per call: service, method, ok."""
import json
import socket
import struct
import sys
import threading

HEADER = struct.Struct("!HBBqi")


def hessian_str(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([len(b)]) + b


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_conn(conn):
    from dubbo_ssl.codec.decoder import Response

    while True:
        head = read_exact(conn, 16)
        if head is None:
            return
        magic, flag, _status, req_id, length = HEADER.unpack(head)
        body = read_exact(conn, length) if length else b""
        if magic != 0xDABB or body is None:
            return
        if flag & 0x20:  # heartbeat: answer with an empty heartbeat response
            conn.sendall(HEADER.pack(0xDABB, 0x22, 20, req_id, 1) + b"N")
            continue
        r = Response(body)
        _dubbo_version = r.read_next()
        service = r.read_next()
        _version = r.read_next()
        method = r.read_next()
        if method == "fail":
            out = hessian_str("boom: %s.%s" % (service.split(".")[-1], method))
            conn.sendall(HEADER.pack(0xDABB, 0x02, 70, req_id, len(out)) + out)
        else:
            out = b"\x91" + hessian_str("hi from %s" % method)  # RESPONSE_VALUE, string
            conn.sendall(HEADER.pack(0xDABB, 0x02, 20, req_id, len(out)) + out)


def server(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def client(port):
    from dubbo_ssl.client import DubboClient

    calls = [
        ("com.fathom.demo.EchoService", "echo", ["hello"]),
        ("com.fathom.demo.EchoService", "echo", ["again"]),
        ("com.fathom.demo.UserService", "getUser", [42]),
        ("com.fathom.demo.EchoService", "fail", ["x"]),
        ("com.fathom.demo.UserService", "listUsers", []),
    ]
    out = []
    for service, method, args in calls:
        c = DubboClient(service, group=None, version="1.0.0", host="127.0.0.1:%d" % port)
        try:
            c.call(method, args, timeout=10)
            ok = True
        except Exception as e:  # DubboResponseException for status 70
            ok = False
            print("call %s.%s failed: %r" % (service, method, e), file=sys.stderr)
        out.append({"service": service, "method": method, "ok": ok})
    for o in out:
        print(json.dumps(o))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]))
