"""Batches of jobs (`gen3d batch`): specs, the batch folder, and the local and Ray backends (docs/scale-out.md)."""
