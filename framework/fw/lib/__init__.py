"""The library layer: mathematics and I/O that several plugins share.

It sits between the core (``fw``) and the plugins: it imports only the core, and plugins import
it. ``tests/test_layers.py`` checks the direction.
"""
