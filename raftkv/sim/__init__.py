"""Deterministic whole-cluster simulator."""
