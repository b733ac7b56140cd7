"""Test-only helpers."""
