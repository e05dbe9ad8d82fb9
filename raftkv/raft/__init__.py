"""The sans-I/O Raft consensus core. Imports nothing but the standard library and raftkv.errors."""
