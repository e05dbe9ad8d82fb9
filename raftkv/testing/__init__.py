"""Test support shipped with the product."""
