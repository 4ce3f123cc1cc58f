"""gen3d's diffusion core: schedules, the Denoiser, samplers, guidance, training and distillation losses.

    >>> from gen3d.diffusion import DiscreteSchedule, Denoiser, CFGDenoiser, sample
"""

from gen3d.diffusion.denoiser import Denoiser, Estimate, diffusers_net, estimate_to_target, output_to_estimate
from gen3d.diffusion.distill import VSD, anneal_t_range, sds_loss
from gen3d.diffusion.guidance import CFGDenoiser, DPSDenoiser, rescale_guidance
from gen3d.diffusion.losses import diffusion_loss, drop_condition
from gen3d.diffusion.samplers import SAMPLERS, USUAL_STEPS, sample
from gen3d.diffusion.schedules import DiscreteSchedule, EDMSchedule, FlowSchedule, NoiseSchedule, karras_sigmas
from gen3d.diffusion.steps import Steps, make_steps

__all__ = [
    "CFGDenoiser", "DPSDenoiser", "Denoiser", "DiscreteSchedule", "EDMSchedule", "Estimate", "FlowSchedule",
    "NoiseSchedule", "SAMPLERS", "Steps", "USUAL_STEPS", "VSD", "anneal_t_range", "diffusers_net",
    "diffusion_loss", "drop_condition", "estimate_to_target", "karras_sigmas", "make_steps",
    "output_to_estimate", "rescale_guidance", "sample", "sds_loss",
]
