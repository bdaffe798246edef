#!/usr/bin/env python3
"""gRPC peers without protoc codegen: generic handlers with identity (bytes)
serializers. `grpc_peer.py server PORT` serves /fathom.Echo/{Unary,Missing,Stream};
`grpc_peer.py client PORT` makes the calls and prints one JSON line per call."""
import json
import sys
import time
from concurrent import futures

import grpc

ident = lambda b: b


def unary(req, ctx):
    return b"echo:" + req


def missing(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def stream(req, ctx):
    for i in range(3):
        yield b"part%d:" % i + req


def server(port):
    handler = grpc.method_handlers_generic_handler(
        "fathom.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=ident, response_serializer=ident),
            "Missing": grpc.unary_unary_rpc_method_handler(missing, request_deserializer=ident, response_serializer=ident),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, request_deserializer=ident, response_serializer=ident),
        },
    )
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.add_generic_rpc_handlers((handler,))
    s.add_insecure_port("127.0.0.1:%d" % port)
    s.start()
    s.wait_for_termination()


def client(port):
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    grpc.channel_ready_future(ch).result(timeout=10)
    calls = []
    u = ch.unary_unary("/fathom.Echo/Unary", request_serializer=ident, response_deserializer=ident)
    for i in range(3):
        r = u(b"hello%d" % i, timeout=10)
        calls.append({"path": "/fathom.Echo/Unary", "code": 0})
    m = ch.unary_unary("/fathom.Echo/Missing", request_serializer=ident, response_deserializer=ident)
    try:
        m(b"x", timeout=10)
        calls.append({"path": "/fathom.Echo/Missing", "code": 0})
    except grpc.RpcError as e:
        calls.append({"path": "/fathom.Echo/Missing", "code": e.code().value[0]})
    st = ch.unary_stream("/fathom.Echo/Stream", request_serializer=ident, response_deserializer=ident)
    parts = list(st(b"s", timeout=10))
    assert len(parts) == 3
    calls.append({"path": "/fathom.Echo/Stream", "code": 0})
    ch.close()
    for c in calls:
        print(json.dumps(c))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]))
