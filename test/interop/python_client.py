"""An old debvisor.v1 client, as the Python tools in the field are: Debian's
grpcio (C core, BoringSSL), no generated code, raw bytes on the wire.

Usage: python_client.py ADDRESS CA CERT KEY  -> prints one JSON object.
"""
import json
import sys

import grpc

address, ca, cert, key = sys.argv[1:5]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel(with_certificate):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key) if with_certificate else None,
        certificate_chain=read(cert) if with_certificate else None,
    )
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def raw(ch, path):
    return ch.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


out = {}
with channel(True) as ch:
    # The contract's ListNodes(Empty): an empty message is zero bytes.
    body, call = raw(ch, "/debvisor.v1.NodeService/ListNodes").with_call(b"", timeout=10)
    out["list_nodes_hex"] = body.hex()
    out["request_id"] = dict(call.trailing_metadata()).get("x-request-id")
with channel(False) as ch:
    try:
        raw(ch, "/debvisor.v1.NodeService/ListNodes")(b"", timeout=10)
        out["no_certificate"] = "OK"
    except grpc.RpcError as e:
        out["no_certificate"] = e.code().name
        out["no_certificate_details"] = e.details()
    out["health_hex"] = raw(ch, "/grpc.health.v1.Health/Check")(b"", timeout=10).hex()
print(json.dumps(out))
