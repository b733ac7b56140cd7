"""fw_kmeans plugin: k-Means as I-Con (seed 004 Thm 8-9; spec icon.md §3.3 #18-21)."""
