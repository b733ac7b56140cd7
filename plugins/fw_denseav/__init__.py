"""DenseAV (seed 000, Ch. 6 and App. D): which image regions a spoken word or a sound names."""
