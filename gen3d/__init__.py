"""gen3d: text, image and few-view to 3D/4D with diffusion priors."""
__version__ = "0.1.0"
