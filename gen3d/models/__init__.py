"""Neural building blocks shared by the priors (text encoder, denoisers)."""
