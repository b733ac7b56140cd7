"""A bare full-batch training loop for comparing learners step by step."""

from __future__ import annotations


def train_full_batch(learner, data, steps: int) -> list[float]:
    """Set up ``learner`` on ``data`` and take ``steps`` full-batch steps; the losses."""
    learner.setup(data)
    opt = learner.configure_optimizers()
    batch = data.full_batch()
    losses = []
    for step in range(steps):
        out = learner.training_step(batch, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses
