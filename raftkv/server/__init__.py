"""The asyncio + gRPC shell around the core: node driver, peer transport, etcd API."""
