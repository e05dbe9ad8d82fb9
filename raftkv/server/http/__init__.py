"""HTTP beside gRPC: etcd's JSON gateway, /health, /livez, /readyz, /version and /metrics.

See docs/http.md for what is served where and how it matches etcd.
"""

from raftkv.server.http.server import HttpServer

__all__ = ["HttpServer"]
