"""Training the bundled priors: the trainer (AdamW, EMA, checkpointed loop), the ShapeWorld data
stages, distributed ranks and the `train` job itself (`gen3d.training.pipeline`)."""
