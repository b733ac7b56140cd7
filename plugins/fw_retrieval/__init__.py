"""Conditional image retrieval (MosAIC): exact conditional kNN with tree pruning, `fw retrieve`."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
