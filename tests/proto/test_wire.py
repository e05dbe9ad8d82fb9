"""The generated protobuf code: current, wire-compatible with etcd, and understood by etcdctl.

1. ``protos/genproto.py --check`` passes: the committed raftkv/pb matches protos/.
2. etcd's wire facts, taken from etcd's public protos, are checked on the descriptors: proto
   packages, messages, field names, numbers and types, enum values, service and method names
   with their streaming kinds. A typo in a .proto fails here. The protos are those under
   https://github.com/etcd-io/etcd/tree/main/api (etcdserverpb/rpc.proto, mvccpb/kv.proto,
   authpb/auth.proto) and, for v3lockpb and v3electionpb, under server/etcdserver/api/ there.
3. The peer protocol carries every field of every raftkv.raft message and value type.
4. A tiny gRPC server built on the generated code answers the real ``etcdctl`` (Debian
   etcd-client 3.4): the wire format as etcd's own client sees it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, cast

import grpc  # type: ignore[import-untyped, unused-ignore]  # types-grpcio: optional
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from raftkv.pb.authpb import auth_pb2
from raftkv.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.pb.health import health_pb2, health_pb2_grpc
from raftkv.pb.mvccpb import kv_pb2
from raftkv.pb.peer import peer_pb2, peer_pb2_grpc
from raftkv.pb.v3electionpb import v3election_pb2, v3election_pb2_grpc
from raftkv.pb.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from raftkv.raft import messages, types

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# 1. Generated code is current
# ------------------------------------------------------------------------------------------------


def test_genproto_check_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "genproto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"genproto --check failed:\n{proc.stdout}{proc.stderr}"


def test_generated_grpc_modules_import_their_pb2_by_package_path() -> None:
    text = (ROOT / "raftkv/pb/etcdserverpb/rpc_pb2_grpc.py").read_text()
    assert "from raftkv.pb.etcdserverpb import rpc_pb2 as" in text
    assert rpc_pb2_grpc.KVStub is not None


# ------------------------------------------------------------------------------------------------
# 2. etcd wire facts, from the descriptors
# ------------------------------------------------------------------------------------------------

_SCALARS = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def _field_spec(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        kind = field.message_type.full_name
    elif field.enum_type is not None:
        kind = field.enum_type.full_name
    else:
        kind = _SCALARS[field.type]
    return f"{field.name}={field.number}:{'[' + kind + ']' if field.is_repeated else kind}"


def _describe(message: Descriptor) -> str:
    return " ".join(_field_spec(f) for f in sorted(message.fields, key=lambda f: f.number))


# Every message of etcd's rpc.proto: "name=number:type", [type] for repeated, by field number.
_H = "header=1:etcdserverpb.ResponseHeader"
RPC_MESSAGES = {
    "ResponseHeader": "cluster_id=1:uint64 member_id=2:uint64 revision=3:int64 raft_term=4:uint64",
    "RangeRequest": (
        "key=1:bytes range_end=2:bytes limit=3:int64 revision=4:int64 "
        "sort_order=5:etcdserverpb.RangeRequest.SortOrder "
        "sort_target=6:etcdserverpb.RangeRequest.SortTarget serializable=7:bool keys_only=8:bool "
        "count_only=9:bool min_mod_revision=10:int64 max_mod_revision=11:int64 "
        "min_create_revision=12:int64 max_create_revision=13:int64"
    ),
    "RangeResponse": f"{_H} kvs=2:[mvccpb.KeyValue] more=3:bool count=4:int64",
    "RangeStreamResponse": "range_response=1:etcdserverpb.RangeResponse",
    "PutRequest": (
        "key=1:bytes value=2:bytes lease=3:int64 prev_kv=4:bool ignore_value=5:bool "
        "ignore_lease=6:bool"
    ),
    "PutResponse": f"{_H} prev_kv=2:mvccpb.KeyValue",
    "DeleteRangeRequest": "key=1:bytes range_end=2:bytes prev_kv=3:bool",
    "DeleteRangeResponse": f"{_H} deleted=2:int64 prev_kvs=3:[mvccpb.KeyValue]",
    "RequestOp": (
        "request_range=1:etcdserverpb.RangeRequest request_put=2:etcdserverpb.PutRequest "
        "request_delete_range=3:etcdserverpb.DeleteRangeRequest "
        "request_txn=4:etcdserverpb.TxnRequest"
    ),
    "ResponseOp": (
        "response_range=1:etcdserverpb.RangeResponse response_put=2:etcdserverpb.PutResponse "
        "response_delete_range=3:etcdserverpb.DeleteRangeResponse "
        "response_txn=4:etcdserverpb.TxnResponse"
    ),
    "Compare": (
        "result=1:etcdserverpb.Compare.CompareResult target=2:etcdserverpb.Compare.CompareTarget "
        "key=3:bytes version=4:int64 create_revision=5:int64 mod_revision=6:int64 value=7:bytes "
        "lease=8:int64 range_end=64:bytes"
    ),
    "TxnRequest": (
        "compare=1:[etcdserverpb.Compare] success=2:[etcdserverpb.RequestOp] "
        "failure=3:[etcdserverpb.RequestOp]"
    ),
    "TxnResponse": f"{_H} succeeded=2:bool responses=3:[etcdserverpb.ResponseOp]",
    "CompactionRequest": "revision=1:int64 physical=2:bool",
    "CompactionResponse": _H,
    "HashRequest": "",
    "HashKVRequest": "revision=1:int64",
    "HashKVResponse": f"{_H} hash=2:uint32 compact_revision=3:int64 hash_revision=4:int64",
    "HashResponse": f"{_H} hash=2:uint32",
    "SnapshotRequest": "",
    "SnapshotResponse": f"{_H} remaining_bytes=2:uint64 blob=3:bytes version=4:string",
    "WatchRequest": (
        "create_request=1:etcdserverpb.WatchCreateRequest "
        "cancel_request=2:etcdserverpb.WatchCancelRequest "
        "progress_request=3:etcdserverpb.WatchProgressRequest"
    ),
    "WatchCreateRequest": (
        "key=1:bytes range_end=2:bytes start_revision=3:int64 progress_notify=4:bool "
        "filters=5:[etcdserverpb.WatchCreateRequest.FilterType] prev_kv=6:bool watch_id=7:int64 "
        "fragment=8:bool"
    ),
    "WatchCancelRequest": "watch_id=1:int64",
    "WatchProgressRequest": "",
    "WatchResponse": (
        f"{_H} watch_id=2:int64 created=3:bool canceled=4:bool compact_revision=5:int64 "
        "cancel_reason=6:string fragment=7:bool events=11:[mvccpb.Event]"
    ),
    "LeaseGrantRequest": "TTL=1:int64 ID=2:int64",
    "LeaseGrantResponse": f"{_H} ID=2:int64 TTL=3:int64 error=4:string",
    "LeaseRevokeRequest": "ID=1:int64",
    "LeaseRevokeResponse": _H,
    "LeaseCheckpoint": "ID=1:int64 remaining_TTL=2:int64",
    "LeaseCheckpointRequest": "checkpoints=1:[etcdserverpb.LeaseCheckpoint]",
    "LeaseCheckpointResponse": _H,
    "LeaseKeepAliveRequest": "ID=1:int64",
    "LeaseKeepAliveResponse": f"{_H} ID=2:int64 TTL=3:int64",
    "LeaseTimeToLiveRequest": "ID=1:int64 keys=2:bool",
    "LeaseTimeToLiveResponse": (f"{_H} ID=2:int64 TTL=3:int64 grantedTTL=4:int64 keys=5:[bytes]"),
    "LeaseLeasesRequest": "",
    "LeaseStatus": "ID=1:int64",
    "LeaseLeasesResponse": f"{_H} leases=2:[etcdserverpb.LeaseStatus]",
    "Member": (
        "ID=1:uint64 name=2:string peerURLs=3:[string] clientURLs=4:[string] isLearner=5:bool"
    ),
    "MemberAddRequest": "peerURLs=1:[string] isLearner=2:bool",
    "MemberAddResponse": (f"{_H} member=2:etcdserverpb.Member members=3:[etcdserverpb.Member]"),
    "MemberRemoveRequest": "ID=1:uint64",
    "MemberRemoveResponse": f"{_H} members=2:[etcdserverpb.Member]",
    "MemberUpdateRequest": "ID=1:uint64 peerURLs=2:[string]",
    "MemberUpdateResponse": f"{_H} members=2:[etcdserverpb.Member]",
    "MemberListRequest": "linearizable=1:bool",
    "MemberListResponse": f"{_H} members=2:[etcdserverpb.Member]",
    "MemberPromoteRequest": "ID=1:uint64",
    "MemberPromoteResponse": f"{_H} members=2:[etcdserverpb.Member]",
    "DefragmentRequest": "",
    "DefragmentResponse": _H,
    "MoveLeaderRequest": "targetID=1:uint64",
    "MoveLeaderResponse": _H,
    "AlarmRequest": (
        "action=1:etcdserverpb.AlarmRequest.AlarmAction memberID=2:uint64 "
        "alarm=3:etcdserverpb.AlarmType"
    ),
    "AlarmMember": "memberID=1:uint64 alarm=2:etcdserverpb.AlarmType",
    "AlarmResponse": f"{_H} alarms=2:[etcdserverpb.AlarmMember]",
    "DowngradeRequest": ("action=1:etcdserverpb.DowngradeRequest.DowngradeAction version=2:string"),
    "DowngradeResponse": f"{_H} version=2:string",
    "DowngradeVersionTestRequest": "ver=1:string",
    "StatusRequest": "",
    "StatusResponse": (
        f"{_H} version=2:string dbSize=3:int64 leader=4:uint64 raftIndex=5:uint64 "
        "raftTerm=6:uint64 raftAppliedIndex=7:uint64 errors=8:[string] dbSizeInUse=9:int64 "
        "isLearner=10:bool storageVersion=11:string dbSizeQuota=12:int64 "
        "downgradeInfo=13:etcdserverpb.DowngradeInfo"
    ),
    "DowngradeInfo": "enabled=1:bool targetVersion=2:string",
    "AuthEnableRequest": "",
    "AuthDisableRequest": "",
    "AuthStatusRequest": "",
    "AuthenticateRequest": "name=1:string password=2:string",
    "AuthUserAddRequest": (
        "name=1:string password=2:string options=3:authpb.UserAddOptions hashedPassword=4:string"
    ),
    "AuthUserGetRequest": "name=1:string",
    "AuthUserDeleteRequest": "name=1:string",
    "AuthUserChangePasswordRequest": "name=1:string password=2:string hashedPassword=3:string",
    "AuthUserGrantRoleRequest": "user=1:string role=2:string",
    "AuthUserRevokeRoleRequest": "name=1:string role=2:string",
    "AuthRoleAddRequest": "name=1:string",
    "AuthRoleGetRequest": "role=1:string",
    "AuthUserListRequest": "",
    "AuthRoleListRequest": "",
    "AuthRoleDeleteRequest": "role=1:string",
    "AuthRoleGrantPermissionRequest": "name=1:string perm=2:authpb.Permission",
    "AuthRoleRevokePermissionRequest": "role=1:string key=2:bytes range_end=3:bytes",
    "AuthEnableResponse": _H,
    "AuthDisableResponse": _H,
    "AuthStatusResponse": f"{_H} enabled=2:bool authRevision=3:uint64",
    "AuthenticateResponse": f"{_H} token=2:string",
    "AuthUserAddResponse": _H,
    "AuthUserGetResponse": f"{_H} roles=2:[string]",
    "AuthUserDeleteResponse": _H,
    "AuthUserChangePasswordResponse": _H,
    "AuthUserGrantRoleResponse": _H,
    "AuthUserRevokeRoleResponse": _H,
    "AuthRoleAddResponse": _H,
    "AuthRoleGetResponse": f"{_H} perm=2:[authpb.Permission]",
    "AuthRoleListResponse": f"{_H} roles=2:[string]",
    "AuthUserListResponse": f"{_H} users=2:[string]",
    "AuthRoleDeleteResponse": _H,
    "AuthRoleGrantPermissionResponse": _H,
    "AuthRoleRevokePermissionResponse": _H,
}

OTHER_MESSAGES = {
    "mvccpb.KeyValue": (
        "key=1:bytes create_revision=2:int64 mod_revision=3:int64 version=4:int64 value=5:bytes "
        "lease=6:int64"
    ),
    "mvccpb.Event": "type=1:mvccpb.Event.EventType kv=2:mvccpb.KeyValue prev_kv=3:mvccpb.KeyValue",
    "authpb.UserAddOptions": "no_password=1:bool",
    "authpb.User": (
        "name=1:bytes password=2:bytes roles=3:[string] options=4:authpb.UserAddOptions"
    ),
    "authpb.Permission": "permType=1:authpb.Permission.Type key=2:bytes range_end=3:bytes",
    "authpb.Role": "name=1:bytes keyPermission=2:[authpb.Permission]",
    "v3lockpb.LockRequest": "name=1:bytes lease=2:int64",
    "v3lockpb.LockResponse": f"{_H} key=2:bytes",
    "v3lockpb.UnlockRequest": "key=1:bytes",
    "v3lockpb.UnlockResponse": _H,
    "v3electionpb.CampaignRequest": "name=1:bytes lease=2:int64 value=3:bytes",
    "v3electionpb.CampaignResponse": f"{_H} leader=2:v3electionpb.LeaderKey",
    "v3electionpb.LeaderKey": "name=1:bytes key=2:bytes rev=3:int64 lease=4:int64",
    "v3electionpb.LeaderRequest": "name=1:bytes",
    "v3electionpb.LeaderResponse": f"{_H} kv=2:mvccpb.KeyValue",
    "v3electionpb.ResignRequest": "leader=1:v3electionpb.LeaderKey",
    "v3electionpb.ResignResponse": _H,
    "v3electionpb.ProclaimRequest": "leader=1:v3electionpb.LeaderKey value=2:bytes",
    "v3electionpb.ProclaimResponse": _H,
    "grpc.health.v1.HealthCheckRequest": "service=1:string",
    "grpc.health.v1.HealthCheckResponse": (
        "status=1:grpc.health.v1.HealthCheckResponse.ServingStatus"
    ),
}

ENUMS = {
    "etcdserverpb.RangeRequest.SortOrder": "NONE=0 ASCEND=1 DESCEND=2",
    "etcdserverpb.RangeRequest.SortTarget": "KEY=0 VERSION=1 CREATE=2 MOD=3 VALUE=4",
    "etcdserverpb.Compare.CompareResult": "EQUAL=0 GREATER=1 LESS=2 NOT_EQUAL=3",
    "etcdserverpb.Compare.CompareTarget": "VERSION=0 CREATE=1 MOD=2 VALUE=3 LEASE=4",
    "etcdserverpb.WatchCreateRequest.FilterType": "NOPUT=0 NODELETE=1",
    "etcdserverpb.AlarmType": "NONE=0 NOSPACE=1 CORRUPT=2",
    "etcdserverpb.AlarmRequest.AlarmAction": "GET=0 ACTIVATE=1 DEACTIVATE=2",
    "etcdserverpb.DowngradeRequest.DowngradeAction": "VALIDATE=0 ENABLE=1 CANCEL=2",
    "mvccpb.Event.EventType": "PUT=0 DELETE=1",
    "authpb.Permission.Type": "READ=0 WRITE=1 READWRITE=2",
    "grpc.health.v1.HealthCheckResponse.ServingStatus": (
        "UNKNOWN=0 SERVING=1 NOT_SERVING=2 SERVICE_UNKNOWN=3"
    ),
}

# Full gRPC method path -> (request, response, kind); kind is unary, server, client or bidi.
_U, _S, _B = "unary", "server", "bidi"
_AUTH_METHODS = {
    "AuthEnable": "AuthEnable",
    "AuthDisable": "AuthDisable",
    "AuthStatus": "AuthStatus",
    "Authenticate": "Authenticate",
    **{
        m: f"Auth{m}"
        for m in (
            "UserAdd", "UserGet", "UserList", "UserDelete", "UserChangePassword", "UserGrantRole",
            "UserRevokeRole", "RoleAdd", "RoleGet", "RoleList", "RoleDelete",
            "RoleGrantPermission", "RoleRevokePermission",
        )
    },
}  # fmt: skip
METHODS: dict[str, tuple[str, str, str]] = {
    "/etcdserverpb.KV/Range": ("RangeRequest", "RangeResponse", _U),
    "/etcdserverpb.KV/RangeStream": ("RangeRequest", "RangeStreamResponse", _S),
    "/etcdserverpb.KV/Put": ("PutRequest", "PutResponse", _U),
    "/etcdserverpb.KV/DeleteRange": ("DeleteRangeRequest", "DeleteRangeResponse", _U),
    "/etcdserverpb.KV/Txn": ("TxnRequest", "TxnResponse", _U),
    "/etcdserverpb.KV/Compact": ("CompactionRequest", "CompactionResponse", _U),
    "/etcdserverpb.Watch/Watch": ("WatchRequest", "WatchResponse", _B),
    "/etcdserverpb.Lease/LeaseGrant": ("LeaseGrantRequest", "LeaseGrantResponse", _U),
    "/etcdserverpb.Lease/LeaseRevoke": ("LeaseRevokeRequest", "LeaseRevokeResponse", _U),
    "/etcdserverpb.Lease/LeaseKeepAlive": ("LeaseKeepAliveRequest", "LeaseKeepAliveResponse", _B),
    "/etcdserverpb.Lease/LeaseTimeToLive": (
        "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse", _U,
    ),
    "/etcdserverpb.Lease/LeaseLeases": ("LeaseLeasesRequest", "LeaseLeasesResponse", _U),
    **{
        f"/etcdserverpb.Cluster/{m}": (f"{m}Request", f"{m}Response", _U)
        for m in ("MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote")
    },
    **{
        f"/etcdserverpb.Maintenance/{m}": (f"{m}Request", f"{m}Response", _U)
        for m in ("Alarm", "Status", "Defragment", "Hash", "HashKV", "MoveLeader", "Downgrade")
    },
    "/etcdserverpb.Maintenance/Snapshot": ("SnapshotRequest", "SnapshotResponse", _S),
    **{
        f"/etcdserverpb.Auth/{m}": (f"{msg}Request", f"{msg}Response", _U)
        for m, msg in _AUTH_METHODS.items()
    },
    "/v3lockpb.Lock/Lock": ("v3lockpb.LockRequest", "v3lockpb.LockResponse", _U),
    "/v3lockpb.Lock/Unlock": ("v3lockpb.UnlockRequest", "v3lockpb.UnlockResponse", _U),
    **{
        f"/v3electionpb.Election/{m}": (f"v3electionpb.{m}Request", f"v3electionpb.{m}Response", _U)
        for m in ("Campaign", "Proclaim", "Leader", "Resign")
    },
    "/v3electionpb.Election/Observe": (
        "v3electionpb.LeaderRequest", "v3electionpb.LeaderResponse", _S,
    ),
    "/grpc.health.v1.Health/Check": (
        "grpc.health.v1.HealthCheckRequest", "grpc.health.v1.HealthCheckResponse", _U,
    ),
    "/grpc.health.v1.Health/Watch": (
        "grpc.health.v1.HealthCheckRequest", "grpc.health.v1.HealthCheckResponse", _S,
    ),
    "/raftkv.peer.v1.Raft/Stream": (
        "raftkv.peer.v1.MessageBatch", "raftkv.peer.v1.StreamAck", _B,
    ),
    "/raftkv.peer.v1.Raft/Snapshot": (
        "raftkv.peer.v1.SnapshotChunk", "raftkv.peer.v1.SnapshotAck", "client",
    ),
}  # fmt: skip

FILES: list[FileDescriptor] = [
    m.DESCRIPTOR
    for m in (rpc_pb2, kv_pb2, auth_pb2, v3lock_pb2, v3election_pb2, health_pb2, peer_pb2)
]


def _qualified(name: str) -> str:
    """Bare names in the tables are etcdserverpb's."""
    return name if "." in name else f"etcdserverpb.{name}"


def _all_messages() -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}

    def visit(message: Descriptor) -> None:
        found[message.full_name] = message
        for nested in message.nested_types:
            visit(nested)

    for file in FILES:
        for message in file.message_types_by_name.values():
            visit(message)
    return found


def test_proto_packages_are_etcds() -> None:
    packages = {f.name: f.package for f in FILES}
    assert packages == {
        "raftkv/pb/etcdserverpb/rpc.proto": "etcdserverpb",
        "raftkv/pb/mvccpb/kv.proto": "mvccpb",
        "raftkv/pb/authpb/auth.proto": "authpb",
        "raftkv/pb/v3lockpb/v3lock.proto": "v3lockpb",
        "raftkv/pb/v3electionpb/v3election.proto": "v3electionpb",
        "raftkv/pb/health/health.proto": "grpc.health.v1",
        "raftkv/pb/peer/peer.proto": "raftkv.peer.v1",
    }
    for file in FILES:
        # proto3: no field presence and no defaults, as in etcd (packed repeated scalars too).
        assert descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb).syntax == "proto3"


def test_rpc_proto_has_exactly_etcds_messages() -> None:
    top_level = set(rpc_pb2.DESCRIPTOR.message_types_by_name)
    assert top_level == set(RPC_MESSAGES)
    assert set(rpc_pb2.DESCRIPTOR.enum_types_by_name) == {"AlarmType"}


@pytest.mark.parametrize(
    ("name", "spec"),
    [(_qualified(k), v) for k, v in RPC_MESSAGES.items()] + list(OTHER_MESSAGES.items()),
)
def test_message_fields_match_etcd(name: str, spec: str) -> None:
    assert _describe(_all_messages()[name]) == spec


def test_oneofs_match_etcd() -> None:
    msgs = _all_messages()
    oneofs = {
        name: {o.name: sorted(f.name for f in o.fields) for o in msgs[name].oneofs}
        for name in (
            "etcdserverpb.RequestOp", "etcdserverpb.ResponseOp", "etcdserverpb.Compare",
            "etcdserverpb.WatchRequest",
        )
    }  # fmt: skip
    assert oneofs == {
        "etcdserverpb.RequestOp": {
            "request": ["request_delete_range", "request_put", "request_range", "request_txn"],
        },
        "etcdserverpb.ResponseOp": {
            "response": ["response_delete_range", "response_put", "response_range", "response_txn"],
        },
        "etcdserverpb.Compare": {
            "target_union": ["create_revision", "lease", "mod_revision", "value", "version"],
        },
        "etcdserverpb.WatchRequest": {
            "request_union": ["cancel_request", "create_request", "progress_request"],
        },
    }
    # Real fields everywhere else: proto3 `optional` would add synthetic oneofs.
    for name, message in msgs.items():
        if name not in oneofs and not name.startswith("raftkv."):
            assert not message.oneofs, name


@pytest.mark.parametrize(("name", "spec"), sorted(ENUMS.items()))
def test_enum_values_match_etcd(name: str, spec: str) -> None:
    enums = {}
    for file in FILES:
        enums.update({e.full_name: e for e in file.enum_types_by_name.values()})
    for message in _all_messages().values():
        enums.update({e.full_name: e for e in message.enum_types})
    assert " ".join(f"{v.name}={v.number}" for v in enums[name].values) == spec


def _methods() -> dict[str, tuple[str, str, str]]:
    kinds = {(False, False): _U, (False, True): _S, (True, False): "client", (True, True): _B}
    found = {}
    for file in FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                kind = kinds[(method.client_streaming, method.server_streaming)]
                path = f"/{service.full_name}/{method.name}"
                found[path] = (method.input_type.full_name, method.output_type.full_name, kind)
    return found


def test_services_and_methods_match_etcd() -> None:
    expected = {
        path: (_qualified(req), _qualified(resp), kind)
        for path, (req, resp, kind) in METHODS.items()
    }
    assert _methods() == expected
    assert sum(p.startswith("/etcdserverpb.Auth/") for p in expected) == 17


def test_generated_stubs_call_the_etcd_paths() -> None:
    """The generated client stubs use exactly the method paths above (no Python-side renaming)."""

    class RecordingChannel:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def _record(self, path: str, *args: object, **kwargs: object) -> None:
            self.paths.append(path)

        unary_unary = unary_stream = stream_unary = stream_stream = _record

    channel = RecordingChannel()
    stubs = [
        rpc_pb2_grpc.KVStub, rpc_pb2_grpc.WatchStub, rpc_pb2_grpc.LeaseStub,
        rpc_pb2_grpc.ClusterStub, rpc_pb2_grpc.MaintenanceStub, rpc_pb2_grpc.AuthStub,
        v3lock_pb2_grpc.LockStub, v3election_pb2_grpc.ElectionStub, health_pb2_grpc.HealthStub,
        peer_pb2_grpc.RaftStub,
    ]  # fmt: skip
    for stub in stubs:
        stub(cast(Any, channel))  # a stand-in that records, not a real grpc.Channel
    assert sorted(channel.paths) == sorted(METHODS)


# ------------------------------------------------------------------------------------------------
# 3. The peer protocol carries every field of the core's messages and value types
# ------------------------------------------------------------------------------------------------

_ENVELOPE = {"src", "dst", "term"}


def _fields(message: Descriptor) -> set[str]:
    return {f.name for f in message.fields}


def test_peer_message_envelope_has_one_body_per_core_message_kind() -> None:
    envelope = peer_pb2.Message.DESCRIPTOR
    assert {"src", "dst", "term"} <= _fields(envelope)
    (body,) = envelope.oneofs
    bodies = {f.message_type.name for f in body.fields if f.message_type is not None}
    assert bodies == {cls.__name__ for cls in messages.MESSAGE_TYPES}
    assert len(body.fields) == len(messages.MESSAGE_TYPES)


@pytest.mark.parametrize("cls", messages.MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_peer_message_kinds_carry_every_field(cls: type) -> None:
    wanted = {f.name for f in dataclasses.fields(cls)} - _ENVELOPE
    if cls is messages.InstallSnapshot:
        # The core's Snapshot value is flattened: its meta and data sit in the message.
        wanted = (wanted - {"snapshot"}) | {f.name for f in dataclasses.fields(types.Snapshot)}
    assert _fields(getattr(peer_pb2, cls.__name__).DESCRIPTOR) == wanted


@pytest.mark.parametrize(
    "cls", [types.Entry, types.HardState, types.ConfState, types.SnapshotMeta], ids=repr
)
def test_peer_value_types_carry_every_field(cls: type) -> None:
    assert _fields(getattr(peer_pb2, cls.__name__).DESCRIPTOR) == {
        f.name for f in dataclasses.fields(cls)
    }


def test_peer_entry_kinds_match_the_core() -> None:
    values = {v.name: v.number for v in peer_pb2.EntryKind.DESCRIPTOR.values}
    assert values == {f"ENTRY_KIND_{k.name}": k.value for k in types.EntryKind}


def test_peer_message_round_trips() -> None:
    msg = peer_pb2.Message(
        src=1,
        dst=2,
        term=7,
        append_entries=peer_pb2.AppendEntries(
            prev_index=10,
            prev_term=6,
            commit=9,
            entries=[peer_pb2.Entry(term=7, index=11, kind=peer_pb2.ENTRY_KIND_NORMAL, data=b"x")],
        ),
    )
    batch = peer_pb2.MessageBatch(cluster_id=5, src=1, dst=2, seq=1, messages=[msg])
    decoded = peer_pb2.MessageBatch.FromString(batch.SerializeToString())
    assert decoded == batch
    assert decoded.messages[0].WhichOneof("body") == "append_entries"


# ------------------------------------------------------------------------------------------------
# 4. The real etcdctl against a stub server built on the generated code
# ------------------------------------------------------------------------------------------------

CLUSTER_ID = 0x1C3D5E7F9A2B4C6D
MEMBER_ID = 0xFEDCBA9876543210  # above 2**63: a uint64 all the way to etcdctl's output
HEADER = rpc_pb2.ResponseHeader(
    cluster_id=CLUSTER_ID, member_id=MEMBER_ID, revision=42, raft_term=3
)
KV = kv_pb2.KeyValue(
    key=b"foo", value=b"bar", create_revision=5, mod_revision=40, version=4, lease=0
)


def _etcdctl() -> str | None:
    if Path("/usr/bin/etcdctl").is_file():
        return "/usr/bin/etcdctl"
    return shutil.which("etcdctl")


class _KV(rpc_pb2_grpc.KVServicer):
    """Answers Range with one fixed key; the generated base class answers the rest UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.requests: list[rpc_pb2.RangeRequest] = []

    def Range(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.RangeRequest, context: grpc.ServicerContext
    ) -> rpc_pb2.RangeResponse:
        self.requests.append(request)
        kv = (
            kv_pb2.KeyValue(key=KV.key, create_revision=KV.create_revision)
            if request.keys_only
            else KV
        )
        return rpc_pb2.RangeResponse(header=HEADER, kvs=[kv], more=False, count=1)


class _Maintenance(rpc_pb2_grpc.MaintenanceServicer):
    def Status(  # noqa: N802 (the generated servicer's name)
        self, request: rpc_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> rpc_pb2.StatusResponse:
        return rpc_pb2.StatusResponse(
            header=HEADER,
            version="3.4.0",
            dbSize=24576,
            dbSizeInUse=16384,
            leader=MEMBER_ID,
            raftIndex=50,
            raftTerm=3,
            raftAppliedIndex=49,
        )


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[str, _KV]]:
    # The servicers are abstract in the typed stubs only: at run time the generated base classes
    # answer every RPC not overridden here with UNIMPLEMENTED.
    kv = _KV()  # type: ignore[abstract]
    with futures.ThreadPoolExecutor(max_workers=4) as pool:
        server = grpc.server(pool)
        rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
        maintenance = _Maintenance()  # type: ignore[abstract]
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(maintenance, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield f"127.0.0.1:{port}", kv
        finally:
            server.stop(grace=None).wait()


def _run_etcdctl(endpoint: str, *args: str) -> str:
    etcdctl = _etcdctl()
    if etcdctl is None:
        pytest.skip("etcdctl not installed (Debian package etcd-client): cannot check the wire")
    env = {**os.environ, "ETCDCTL_API": "3"}
    cmd = [etcdctl, f"--endpoints={endpoint}", "--dial-timeout=5s", "--command-timeout=10s"]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, f"etcdctl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _check_header(header: dict[str, int]) -> None:
    assert header == {
        "cluster_id": CLUSTER_ID,
        "member_id": MEMBER_ID,
        "revision": 42,
        "raft_term": 3,
    }


def test_etcdctl_endpoint_status(stub_server: tuple[str, _KV]) -> None:
    endpoint, _ = stub_server
    (entry,) = json.loads(_run_etcdctl(endpoint, "endpoint", "status", "-w", "json"))
    assert entry["Endpoint"] == endpoint
    status = entry["Status"]
    _check_header(status.pop("header"))
    assert status == {
        "version": "3.4.0",
        "dbSize": 24576,
        "dbSizeInUse": 16384,
        "leader": MEMBER_ID,
        "raftIndex": 50,
        "raftTerm": 3,
        "raftAppliedIndex": 49,
    }


def test_etcdctl_get(stub_server: tuple[str, _KV]) -> None:
    endpoint, kv = stub_server
    kv.requests.clear()
    out = json.loads(_run_etcdctl(endpoint, "get", "foo", "-w", "json"))
    _check_header(out["header"])
    # etcdctl's JSON is Go's encoding of the gogo structs: bytes as base64, zero values omitted.
    assert out["kvs"] == [
        {"key": "Zm9v", "value": "YmFy", "create_revision": 5, "mod_revision": 40, "version": 4}
    ]
    assert out["count"] == 1
    assert kv.requests == [rpc_pb2.RangeRequest(key=b"foo")]  # linearizable, no range


def test_etcdctl_get_sends_every_range_option(stub_server: tuple[str, _KV]) -> None:
    endpoint, kv = stub_server
    kv.requests.clear()
    out = _run_etcdctl(
        endpoint, "get", "foo", "--prefix", "--limit=5", "--rev=7", "--order=DESCEND",
        "--sort-by=MODIFY", "--consistency=s", "--keys-only",
    )  # fmt: skip
    # etcdctl 3.4 has no flags for count_only and the min/max revision filters (fields 9-13);
    # their numbers are checked against etcd's proto in test_message_fields_match_etcd.
    assert out.split() == ["foo"]
    assert kv.requests == [
        rpc_pb2.RangeRequest(
            key=b"foo",
            range_end=b"fop",
            limit=5,
            revision=7,
            sort_order=rpc_pb2.RangeRequest.DESCEND,
            sort_target=rpc_pb2.RangeRequest.MOD,
            serializable=True,
            keys_only=True,
        )
    ]


def test_etcdctl_get_from_key(stub_server: tuple[str, _KV]) -> None:
    endpoint, kv = stub_server
    kv.requests.clear()
    _run_etcdctl(endpoint, "get", "a", "--from-key", "--order=ASCEND", "--sort-by=VERSION")
    assert kv.requests == [
        rpc_pb2.RangeRequest(
            key=b"a",
            range_end=b"\0",
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            sort_target=rpc_pb2.RangeRequest.VERSION,
        )
    ]


def test_etcdctl_endpoint_health(stub_server: tuple[str, _KV]) -> None:
    endpoint, kv = stub_server
    kv.requests.clear()
    (entry,) = json.loads(_run_etcdctl(endpoint, "endpoint", "health", "-w", "json"))
    assert entry["endpoint"] == endpoint
    assert entry["health"] is True
    assert kv.requests == [rpc_pb2.RangeRequest(key=b"health")]
