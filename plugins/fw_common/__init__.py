"""Generic parts every method shares: optimizers, mappers, and the generic I-Con learner."""
