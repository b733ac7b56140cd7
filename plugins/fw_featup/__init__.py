"""FeatUp (seed 000 ch. 5; spec featup.md): model-agnostic feature upsampling."""
