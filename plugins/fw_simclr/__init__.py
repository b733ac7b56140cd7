"""fw_simclr plugin: SimCLR / InfoNCE (seed 004 Thm 4; spec icon.md §3.3 #5-6)."""
