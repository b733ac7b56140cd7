"""fw_data plugin."""
