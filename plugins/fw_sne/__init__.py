"""SNE and t-SNE: Gaussian and Student-t neighbourhoods, t-SNE's optimiser, two learners."""
