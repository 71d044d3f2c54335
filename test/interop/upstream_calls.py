"""Calls debvisor.v1 the way clients generated from the upstream debvisor.proto
do: Debian's grpcio (C core), mTLS, serialized messages as bytes.

Usage: upstream_calls.py ADDRESS CA CERT KEY < calls.json -> one JSON list.
calls.json is a list of {"path", "request_hex", "timeout"}; each answer is
{"code", "details", "response_hex", "reason"} in the same order. The calls
run one after the other on one channel, as a retrying client makes them.
"""
import json
import sys

import grpc

address, ca, cert, key = sys.argv[1:5]


def read(path):
    with open(path, "rb") as f:
        return f.read()


creds = grpc.ssl_channel_credentials(
    root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
)
out = []
with grpc.secure_channel(
    address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
) as ch:
    for call in json.load(sys.stdin):
        method = ch.unary_unary(
            call["path"], request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            body = method(bytes.fromhex(call["request_hex"]), timeout=call["timeout"])
            out.append({"code": "OK", "details": "", "response_hex": body.hex(), "reason": ""})
        except grpc.RpcError as e:
            reason = dict(e.trailing_metadata() or ()).get("debvisor-error-reason", "")
            out.append(
                {"code": e.code().name, "details": e.details(), "response_hex": "", "reason": reason}
            )
print(json.dumps(out))
