"""A Laplace-kernel neighbourhood distribution, packaged as its own fw plugin."""
