"""Generated protobuf and gRPC modules: etcd's wire API and raftkv's peer protocol.

Everything here except the ``__init__.py`` files is generated from ``protos/`` by
``python protos/genproto.py`` and verified by ``--check``: edit the .proto files, never the
``*_pb2*.py`` / ``*.pyi`` files.
"""
