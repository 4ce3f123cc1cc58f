"""MVDream (sd-v2.1-base-4view) as a 4-view prior, built from diffusers blocks.

MVDream is SD 2.1-base's UNet with two changes, both expressed with stock diffusers parts:
* its self-attention runs jointly over the 4 views of a set: `MultiViewAttnProcessor` reshapes
  (B * 4, L, C) to (B, 4 L, C) around each `attn1` (cross-attention to the text stays per view);
* an MLP of the flattened 4 x 4 camera matrix is added to the timestep embedding: that is exactly
  UNet2DConditionModel's class embedding of type "projection" (16 -> 1280 -> 1280), fed the
  cameras as `class_labels`.

Folders: gen3d's (`gen3d convert --from mvdream sd-v2.1-base-4view.pt`: a plain diffusers
UNet2DConditionModel with that class embedding) or the community layout of
ashawkey/mvdream-sd2.1-diffusers, whose `unet/` is a MultiViewUNetModel with MVDream's own key
names; it is mapped onto the diffusers UNet while loading, with the same rules as the converter.

Cameras: MVDream was trained on camera-to-world matrices with OpenGL camera axes in a z-up world
(its Blender frame) and the translation scaled to unit length, flattened row-major; that is
gen3d's convention, so only the translation is normalised. MVDream's azimuth 0 looks from -y
(gen3d azimuth -90 degrees); its sampling script starts at azimuth 90, gen3d's azimuth 0.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gen3d.cameras import Cameras
from gen3d.diffusion.denoiser import Cond
from gen3d.errors import UserError
from gen3d.models.adapters import (
    LatentPrior,
    PromptEncoder,
    load_component,
    open_prior,
    read_json,
    read_state_dict,
    schedule_from_config,
)
from gen3d.models.adapters.checkpoints import infer_config, infer_unet_config
from gen3d.models.adapters.convert import Layout, build_component, component_rules, folder_shapes, to_folder
from gen3d.models.prior import Observed, PriorOptions

VIEWS = 4  # MVDream's released checkpoints denoise sets of 4 views


class MultiViewAttnProcessor:
    """Self-attention across the `views` consecutive samples of each set (their tokens are concatenated)."""

    def __init__(self, views: int, inner):
        self.views, self.inner = views, inner

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None) -> Tensor:
        batch, tokens, channels = hidden_states.shape
        joint = hidden_states.reshape(batch // self.views, self.views * tokens, channels)
        out = self.inner(attn, joint, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask)
        return out.reshape(batch, tokens, channels)


def make_multiview(unet: nn.Module, views: int = VIEWS) -> nn.Module:
    """Wrap every self-attention (`attn1`) processor of a diffusers UNet in a MultiViewAttnProcessor."""
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if isinstance(module, Attention) and name.endswith("attn1"):
            module.set_processor(MultiViewAttnProcessor(views, module.processor))
    return unet


def mvdream_camera(cameras: Cameras) -> Tensor:
    """MVDream's camera input (V, 16): camera-to-world with unit-length translation, flattened row-major."""
    c2w = cameras.c2w.float().clone()
    c2w[:, :3, 3] = F.normalize(c2w[:, :3, 3], dim=-1)
    return c2w.reshape(len(cameras), 16)


def unet_from_mvdream_names(folder: Path, dtype: torch.dtype) -> nn.Module:
    """ashawkey/mvdream-sd2.1-diffusers' MultiViewUNetModel weights as a diffusers UNet2DConditionModel."""
    config = read_json(folder / "config.json")
    if config.get("ip_dim", 0):
        raise UserError(f"{folder}: an ImageDream UNet (ip_dim {config['ip_dim']}); only MVDream is supported")
    state = read_state_dict(folder)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    head_channels = config.get("num_head_channels", 64)
    heads = {"head_channels": head_channels} if head_channels > 0 else {"heads": config["num_heads"]}
    unet_config = infer_config(infer_unet_config, shapes, "", str(folder), sample_size=config.get("image_size", 32), **heads)
    rules = component_rules("unet", unet_config, list(folder_shapes("unet", unet_config)), prefix="")
    tensors = to_folder(Layout("mvdream", {"unet": unet_config}, {"unet": rules}), state, str(folder))["unet"]
    with torch.device("meta"):
        unet = build_component("unet", unet_config)
    unet.load_state_dict(tensors, strict=True, assign=True)
    return unet.to(dtype).eval().requires_grad_(False)


class MVDreamPrior(LatentPrior):
    name = "mvdream"
    views_per_set = VIEWS
    max_observed = 0
    default_guidance = 7.5

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype, options: PriorOptions):
        from diffusers import AutoencoderKL, UNet2DConditionModel

        schedule, prediction = schedule_from_config(root / "scheduler" / "scheduler_config.json")
        if read_json(root / "unet" / "config.json").get("_class_name") == "MultiViewUNetModel":
            unet = unet_from_mvdream_names(root / "unet", dtype)
        else:
            unet = load_component(UNet2DConditionModel, root, "unet", dtype)
        vae = load_component(AutoencoderKL, root, "vae", dtype)
        super().__init__(unet, vae, schedule, prediction, device, dtype, options)
        make_multiview(self.unet)
        self.prompts = PromptEncoder(root, device, dtype, options.offload_text_encoder)
        self.negative_prompt = ""

    def condition(self, prompt: str | None, cameras: Cameras, observed: Observed | None = None) -> tuple[Cond, Cond]:
        if observed is not None:
            raise UserError("the mvdream prior is text-only; image-conditioned jobs need --prior zero123")
        if len(cameras) % VIEWS:
            raise ValueError(f"mvdream conditions sets of {VIEWS} views, got {len(cameras)} cameras")
        views = len(cameras)
        camera = mvdream_camera(cameras).to(self.device, self.dtype)
        text = self.prompts([prompt or ""]).expand(views, -1, -1)
        empty = self.prompts([self.negative_prompt]).expand(views, -1, -1)
        return ({"encoder_hidden_states": text, "class_labels": camera},
                {"encoder_hidden_states": empty, "class_labels": camera})


def load_mvdream(model_path: Path | None, device: str = "cpu", options: PriorOptions | None = None) -> MVDreamPrior:
    root, dev, dtype, options = open_prior(model_path, "mvdream", device, options)
    return MVDreamPrior(root, dev, dtype, options)
