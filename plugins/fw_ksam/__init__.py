"""KSAM: axiomatic explanations of similarity models (spec explain.md, seed 000 ch. 7)."""
