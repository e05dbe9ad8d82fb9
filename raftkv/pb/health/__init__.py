"""The standard gRPC health service (proto package ``grpc.health.v1``)."""
