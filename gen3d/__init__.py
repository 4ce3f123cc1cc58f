"""gen3d: text, image and few-view to 3D/4D with diffusion priors."""

import os

# Before torch loads OpenMP: its waiting threads sleep instead of spinning. Spinning threads take
# a busy machine's cores from each other; beside one other process, a 2-thread text-to-3d fit took
# 196 s spinning and 6.8 s sleeping. A policy the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
