"""The gateway's paths, as etcd's grpc-gateway registers them (the google.api.http options of
etcd's rpc.proto, v3lock.proto and v3election.proto): every one is a POST under ``/v3/``.

Each path names a gRPC method; its request and response types and whether it streams come
from the method's descriptor, so the table cannot disagree with the generated code.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from raftkv.pb.etcdserverpb import rpc_pb2
from raftkv.pb.v3electionpb import v3election_pb2
from raftkv.pb.v3lockpb import v3lock_pb2

__all__ = ["ROUTES", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    """The gRPC method, ``/etcdserverpb.KV/Range``."""
    request: type[Message]
    response: type[Message]
    client_stream: bool
    server_stream: bool


_KV = {
    "kv/range": "Range",
    "kv/put": "Put",
    "kv/deleterange": "DeleteRange",
    "kv/txn": "Txn",
    "kv/compaction": "Compact",
}
_WATCH = {"watch": "Watch"}
_LEASE = {
    "lease/grant": "LeaseGrant",
    "lease/revoke": "LeaseRevoke",
    "kv/lease/revoke": "LeaseRevoke",
    "lease/keepalive": "LeaseKeepAlive",
    "lease/timetolive": "LeaseTimeToLive",
    "kv/lease/timetolive": "LeaseTimeToLive",
    "lease/leases": "LeaseLeases",
    "kv/lease/leases": "LeaseLeases",
}
_CLUSTER = {
    f"cluster/member/{verb}": f"Member{verb.capitalize()}"
    for verb in ("add", "remove", "update", "list", "promote")
}
_MAINTENANCE = {
    "maintenance/alarm": "Alarm",
    "maintenance/status": "Status",
    "maintenance/defragment": "Defragment",
    "maintenance/hash": "Hash",
    "maintenance/hashkv": "HashKV",
    "maintenance/snapshot": "Snapshot",
    "maintenance/transfer-leadership": "MoveLeader",
    "maintenance/downgrade": "Downgrade",
}
_AUTH = {
    "auth/enable": "AuthEnable",
    "auth/disable": "AuthDisable",
    "auth/status": "AuthStatus",
    "auth/authenticate": "Authenticate",
    "auth/user/add": "UserAdd",
    "auth/user/get": "UserGet",
    "auth/user/list": "UserList",
    "auth/user/delete": "UserDelete",
    "auth/user/changepw": "UserChangePassword",
    "auth/user/grant": "UserGrantRole",
    "auth/user/revoke": "UserRevokeRole",
    "auth/role/add": "RoleAdd",
    "auth/role/get": "RoleGet",
    "auth/role/list": "RoleList",
    "auth/role/delete": "RoleDelete",
    "auth/role/grant": "RoleGrantPermission",
    "auth/role/revoke": "RoleRevokePermission",
}
_LOCK = {"lock/lock": "Lock", "lock/unlock": "Unlock"}
_ELECTION = {
    f"election/{verb}": verb.capitalize()
    for verb in ("campaign", "proclaim", "leader", "observe", "resign")
}


def _routes(file: FileDescriptor, service: str, paths: dict[str, str]) -> dict[str, Route]:
    desc = file.services_by_name[service]
    out = {}
    for path, name in paths.items():
        method = desc.methods_by_name[name]
        out["/v3/" + path] = Route(
            path=f"/{desc.full_name}/{name}",
            request=message_factory.GetMessageClass(method.input_type),
            response=message_factory.GetMessageClass(method.output_type),
            client_stream=method.client_streaming,
            server_stream=method.server_streaming,
        )
    return out


ROUTES: dict[str, Route] = {
    **_routes(rpc_pb2.DESCRIPTOR, "KV", _KV),
    **_routes(rpc_pb2.DESCRIPTOR, "Watch", _WATCH),
    **_routes(rpc_pb2.DESCRIPTOR, "Lease", _LEASE),
    **_routes(rpc_pb2.DESCRIPTOR, "Cluster", _CLUSTER),
    **_routes(rpc_pb2.DESCRIPTOR, "Maintenance", _MAINTENANCE),
    **_routes(rpc_pb2.DESCRIPTOR, "Auth", _AUTH),
    **_routes(v3lock_pb2.DESCRIPTOR, "Lock", _LOCK),
    **_routes(v3election_pb2.DESCRIPTOR, "Election", _ELECTION),
}
"""``/v3/kv/range`` -> the route; ``/v3beta/`` paths are rewritten to ``/v3/`` before lookup."""
