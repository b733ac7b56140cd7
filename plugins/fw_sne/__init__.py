"""fw_sne plugin."""
