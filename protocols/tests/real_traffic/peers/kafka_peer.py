#!/usr/bin/env python3
"""Kafka client peer (kafka-python): create topic "fathom-test", produce
messages, consume them back (partition assigned, no group). Records every request the
library put on the wire (local port, correlation id, api key and version,
topic for Produce/Fetch) and whether a response came back, as JSON lines.
Usage: kafka_peer.py PORT N_MESSAGES"""
import json
import sys
import time

import kafka.net.connection as kconn
import kafka.protocol.parser as kparser
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

TOPIC = "fathom-test"
port = int(sys.argv[1])
n = int(sys.argv[2])
sent = {}

orig_made = kconn.KafkaConnection.connection_made


def connection_made(self, transport):
    orig_made(self, transport)
    try:
        self.parser._fathom_port = transport.getHost()[1]
    except Exception:
        self.parser._fathom_port = None


kconn.KafkaConnection.connection_made = connection_made

orig_send = kparser.KafkaProtocol.send_request


def send_request(self, request, correlation_id=None):
    cid = orig_send(self, request, correlation_id)
    h = request.header
    key = h.request_api_key
    rec = {
        "port": getattr(self, "_fathom_port", None),
        "cid": cid,
        "key": key,
        "ver": h.request_api_version,
        "expect_response": bool(request.expect_response()),
        "resp": False,
    }
    if key in (0, 1):
        rec["topic"] = TOPIC
    sent[(rec["port"], cid)] = rec
    return cid


kparser.KafkaProtocol.send_request = send_request

orig_proc = kparser.KafkaProtocol._process_response


def process_response(self, read_buffer):
    header = self.in_flight_requests[0] if self.in_flight_requests else None
    out = orig_proc(self, read_buffer)
    if header is not None:
        rec = sent.get((getattr(self, "_fathom_port", None), header.correlation_id))
        if rec is not None:
            rec["resp"] = True
    return out


kparser.KafkaProtocol._process_response = process_response

boot = "127.0.0.1:%d" % port
admin = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=10000)
try:
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
except Exception as e:  # already exists
    print("create_topics:", e, file=sys.stderr)
admin.close()

producer = KafkaProducer(bootstrap_servers=boot, acks=1, linger_ms=0, request_timeout_ms=10000)
for i in range(n):
    producer.send(TOPIC, key=b"k%d" % i, value=b"fathom message %d" % i).get(timeout=10)
producer.flush()
producer.close()

consumer = KafkaConsumer(
    bootstrap_servers=boot,
    group_id=None,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    request_timeout_ms=11000,
)
# No consumer group: the tansu broker's group protocol stalls kafka-python's
# SyncGroup; assigning the partition exercises ListOffsets and Fetch.
consumer.assign([TopicPartition(TOPIC, 0)])
got = 0
deadline = time.time() + 20
while got < n and time.time() < deadline:
    batch = consumer.poll(timeout_ms=500)
    for tp, msgs in batch.items():
        got += len(msgs)
consumer.close()
for rec in sent.values():
    print(json.dumps(rec))
print(json.dumps({"consumed": got}))
sys.exit(0 if got >= n else 3)
