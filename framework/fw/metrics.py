"""Placeholder replaced by the metrics module (see issue 2 item 7)."""
