"""JSON as etcd's grpc-gateway writes and reads it, and its error bodies.

Output follows etcd 3.4's marshaler (grpc-gateway v1 ``JSONPb{OrigName: true}``, defaults not
emitted), which protobuf's own ``json_format`` reproduces: field names as written in the .proto
(``create_revision``, ``dbSize``), 64-bit integers as strings, bytes as standard base64, enums
by name, and fields at their default left out (a Put answers ``{"header": {...}}`` only).

Input is lenient, as both of etcd's gateways are: proto names and lowerCamel JSON names, 64-bit
integers as strings or numbers, enums by name or number, bytes in standard or URL-safe base64,
and unknown fields ignored (etcd 3.6 discards them; clients send extra fields).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = [
    "JsonRequestError",
    "error_body",
    "http_status",
    "parse_body",
    "parse_message",
    "raw_objects",
    "result_chunk",
    "stream_error_chunk",
    "to_json",
]

_M = TypeVar("_M", bound=Message)

_C = grpc.StatusCode
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _C.OK: 200,
    _C.CANCELLED: 408,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.RESOURCE_EXHAUSTED: 429,
    # etcd 3.4.23 as Debian builds it (grpc-gateway 1.6) answers 412, as checked against it;
    # later gateways answer 400. docs/http.md says why raftkv keeps the reference's answer.
    _C.FAILED_PRECONDITION: 412,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
    _C.UNAUTHENTICATED: 401,
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class JsonRequestError(ValueError):
    """A request body that is not JSON, or JSON that does not fit the request message."""


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def _code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def to_json(message: Message) -> bytes:
    """``message`` as etcd's gateway writes it, compact as Go's encoder is."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(data, separators=(",", ":")).encode()


def parse_message(data: object, cls: type[_M]) -> _M:
    """A decoded JSON value as a ``cls`` message; JsonRequestError if it does not fit."""
    if not isinstance(data, dict):
        raise JsonRequestError(f"cannot unmarshal {type(data).__name__} into {cls.__name__}")
    try:
        return json_format.ParseDict(data, cls(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise JsonRequestError(str(exc)) from None


def parse_body(body: bytes, cls: type[_M]) -> _M:
    """A unary request body; an empty body is the empty message, as in etcd's gateway."""
    if not body.strip():
        return cls()
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonRequestError(str(exc)) from None
    return parse_message(data, cls)


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    """A unary error. etcd 3.4 and 3.5 write ``error``, ``code`` and ``message``; etcd 3.6
    writes ``code``, ``message`` and ``details``: this is both, so either kind of reader works."""
    body = {"error": message, "code": _code_number(code), "message": message, "details": []}
    return json.dumps(body, separators=(",", ":")).encode()


def stream_error_chunk(code: grpc.StatusCode, message: str) -> bytes:
    """The error that ends a response stream, as etcd 3.4's gateway writes it (one chunk)."""
    status = http_status(code)
    error = {
        "grpc_code": _code_number(code),
        "http_code": status,
        "message": message,
        "http_status": _REASONS.get(status, ""),
        "details": [],
    }
    return json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n"


def result_chunk(message: Message) -> bytes:
    """One message of a response stream: ``{"result": ...}`` and a newline, one HTTP chunk."""
    return b'{"result":' + to_json(message) + b"}\n"


def raw_objects(decoder: json.JSONDecoder, text: str) -> tuple[list[Any], str]:
    """The complete JSON values at the start of ``text`` (a request stream is a sequence of
    them, as Go's json.Decoder reads it) and the incomplete rest."""
    values: list[Any] = []
    while True:
        text = text.lstrip()
        if not text:
            return values, ""
        try:
            value, end = decoder.raw_decode(text)
        except json.JSONDecodeError:
            return values, text  # incomplete (or bad): more data decides
        values.append(value)
        text = text[end:]
