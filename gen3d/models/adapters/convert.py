"""`gen3d convert`'s name tables: original checkpoints to the model folders the adapters load
(reading and writing the files: `gen3d.models.adapters.checkpoints`).

Original checkpoints (Stable Diffusion `.ckpt` / `.safetensors`, Zero-1-to-3 and Stable Zero123
`.ckpt`, MVDream's `sd-v2.1-base-4view.pt`) hold one state dict with LDM, OpenCLIP and OpenAI-CLIP
key names. A conversion is a list of `Rule`s between those names and the names in the folder's
diffusers / transformers weight files. The rules are generated from the target model's own key
list, so one table runs both ways: `to_folder` converts a checkpoint and `to_original` writes one
back (the tests build original-format checkpoints with it and check the round trip on the
full-size key sets). The tables are gen3d's own; diffusers' `single_file_utils` converters, which
do the same job for plain Stable Diffusion but have no inverse and no Zero123 / MVDream rules,
serve as an independent check of the SD tables in the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from gen3d.errors import UserError

Op = Literal["copy", "conv1x1", "qkv", "transpose"]
KINDS = ("sd", "zero123", "stable-zero123", "mvdream")

#: key prefixes of each component inside an original checkpoint
ORIGINAL_PREFIX = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.model.",  # OpenCLIP (SD 2.x, MVDream)
    "image_encoder": "cond_stage_model.model.",  # OpenAI CLIP (Zero123)
    "cc_projection": "",
}
CLIP_TEXT_PREFIX = "cond_stage_model.transformer."  # HF CLIP text model (SD 1.x)

#: SD's training schedule, shared by every kind converted here
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
VAE_SCALING = 0.18215
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
#: feature_extractor/preprocessor_config.json of the Zero123 layout (OpenAI CLIP's preprocessing)
CLIP_PROCESSOR = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
                  "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_normalize": True,
                  "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3}


@dataclass(frozen=True)
class Rule:
    """One original tensor and the folder tensor(s) it becomes (three for a fused q/k/v projection)."""

    original: str
    targets: tuple[str, ...]
    op: Op = "copy"

    def to_folder(self, tensor: Tensor) -> list[Tensor]:
        if self.op == "conv1x1":  # LDM's VAE attention uses 1x1 convolutions, diffusers linear layers
            return [tensor.reshape(tensor.shape[0], tensor.shape[1])]
        if self.op == "transpose":
            return [tensor.T.contiguous()]
        if self.op == "qkv":
            return [part.clone() for part in tensor.chunk(3, dim=0)]
        return [tensor]

    def to_original(self, tensors: list[Tensor]) -> Tensor:
        if self.op == "conv1x1":
            return tensors[0][:, :, None, None]
        if self.op == "transpose":
            return tensors[0].T.contiguous()
        if self.op == "qkv":
            return torch.cat(tensors, dim=0)
        return tensors[0]


# ---- rule tables --------------------------------------------------------------------------------

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
               "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_QKV = re.compile(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def unet_pairs(config: dict) -> dict[str, str]:
    """diffusers UNet2DConditionModel module names -> LDM `openaimodel.UNetModel` names."""
    layers = config["layers_per_block"]
    pairs = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "class_embedding.linear_1": "camera_embed.0", "class_embedding.linear_2": "camera_embed.2",
             "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
             "mid_block.resnets.1": "middle_block.2"}
    for i, _ in enumerate(config["down_block_types"]):
        for j in range(layers):
            n = 1 + i * (layers + 1) + j
            pairs[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            pairs[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        pairs[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
    for i, kind in enumerate(config["up_block_types"]):
        for j in range(layers + 1):
            n = i * (layers + 1) + j
            pairs[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{n}.0"
            pairs[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
        upsampler_slot = 2 if "CrossAttn" in kind else 1  # after the resnet and, if any, the attention
        pairs[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (layers + 1) + layers}.{upsampler_slot}.conv"
    for prefix, original in list(pairs.items()):
        if ".resnets." in prefix:
            pairs.update({f"{prefix}.{a}": f"{original}.{b}" for a, b in _UNET_RESNET.items()})
    return pairs


def vae_pairs(config: dict) -> dict[str, str]:
    """diffusers AutoencoderKL module names -> LDM `AutoencoderKL` names (decoder levels run in reverse)."""
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    same = ["encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out", "quant_conv", "post_quant_conv"]
    pairs = {name: name for name in same}
    pairs.update({"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"})
    for part in ("encoder", "decoder"):
        pairs[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        pairs[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
        pairs.update({f"{part}.mid_block.attentions.0.{a}": f"{part}.mid.attn_1.{b}" for a, b in attn.items()})
    for i in range(levels):
        for j in range(layers):
            pairs[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        pairs[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        for j in range(layers + 1):
            pairs[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
        pairs[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{levels - 1 - i}.upsample.conv"
    for prefix, original in list(pairs.items()):
        if ".resnets." in prefix:
            pairs[f"{prefix}.conv_shortcut"] = f"{original}.nin_shortcut"
    return pairs


def _clip_layers(pairs: dict[str, str], target: str, original: str, layers: int) -> dict[str, str]:
    for i in range(layers):
        pairs[f"{target}.{i}"] = f"{original}.{i}"
        pairs.update({f"{target}.{i}.{a}": f"{original}.{i}.{b}" for a, b in _CLIP_LAYER.items()})
    return pairs


def openclip_text_pairs(config: dict) -> dict[str, str]:
    """transformers CLIPTextModel file names -> OpenCLIP text tower names."""
    pairs = {"text_model.embeddings.token_embedding": "token_embedding",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm": "ln_final"}
    return _clip_layers(pairs, "text_model.encoder.layers", "transformer.resblocks", config["num_hidden_layers"])


def openai_visual_pairs(config: dict) -> dict[str, str]:
    """transformers CLIPVisionModelWithProjection file names -> OpenAI CLIP `visual` names."""
    pairs = {"vision_model.embeddings.class_embedding": "visual.class_embedding",
             "vision_model.embeddings.patch_embedding": "visual.conv1",
             "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
             "vision_model.pre_layrnorm": "visual.ln_pre", "vision_model.post_layernorm": "visual.ln_post",
             "visual_projection.weight": "visual.proj"}
    return _clip_layers(pairs, "vision_model.encoder.layers", "visual.transformer.resblocks", config["num_hidden_layers"])


def _original_name(key: str, pairs: dict[str, str]) -> str:
    """The longest module prefix of `key` in `pairs` decides its original name."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in pairs:
            return ".".join([pairs[prefix], *parts[end:]])
    raise UserError(f"unsupported architecture: no original checkpoint name for '{key}'")


def make_rules(keys: list[str], pairs: dict[str, str] | None, prefix: str, *, fuse_qkv: bool = False,
               conv1x1: re.Pattern | None = None, transpose: tuple[str, ...] = ()) -> list[Rule]:
    """Rules for one component from its folder key names (pairs None: names are kept)."""
    rules, fused = [], {}
    for key in keys:
        match = _QKV.match(key) if fuse_qkv else None
        if match:
            fused.setdefault((match[1], match[3]), {})[match[2]] = key
            continue
        original = prefix + (key if pairs is None else _original_name(key, pairs))
        op: Op = "conv1x1" if conv1x1 and conv1x1.search(original) else "transpose" if key in transpose else "copy"
        rules.append(Rule(original, (key,), op))
    for (layer, param), qkv in fused.items():
        original = prefix + _original_name(layer, pairs or {}) + f".attn.in_proj_{param}"
        rules.append(Rule(original, (qkv["q"], qkv["k"], qkv["v"]), "qkv"))
    return rules


_VAE_CONV_ATTN = re.compile(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$")


def component_rules(component: str, config: dict, keys: list[str], *, text_family: str = "openclip",
                    prefix: str | None = None) -> list[Rule]:
    """Rules between an original checkpoint and one folder component (`prefix` overrides the usual one)."""
    prefix = ORIGINAL_PREFIX[component] if prefix is None else prefix
    if component == "unet":
        return make_rules(keys, unet_pairs(config), prefix)
    if component == "vae":
        return make_rules(keys, vae_pairs(config), prefix, conv1x1=_VAE_CONV_ATTN)
    if component == "text_encoder" and text_family == "clip":
        return make_rules(keys, None, CLIP_TEXT_PREFIX)
    if component == "text_encoder":
        return make_rules(keys, openclip_text_pairs(config), prefix, fuse_qkv=True)
    if component == "image_encoder":
        return make_rules(keys, openai_visual_pairs(config), prefix, fuse_qkv=True, transpose=("visual_projection.weight",))
    if component == "cc_projection":
        return make_rules(keys, {"projection": "cc_projection"}, prefix)
    raise ValueError(f"unknown component '{component}'")


# ---- folder components --------------------------------------------------------------------------

class CCProjection(nn.Module):
    """Zero123's 772 -> 768 projection of [CLIP image embedding, relative pose] (keys `projection.*`)."""

    def __init__(self, in_channel: int = 772, out_channel: int = 768):
        super().__init__()
        self.projection = nn.Linear(in_channel, out_channel)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(x)


def build_component(component: str, config: dict) -> nn.Module:
    """An (uninitialised when built under torch.device('meta')) model for a folder component."""
    if component == "unet":
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_config(config)
    if component == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_config(config)
    if component == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig(**config))
    if component == "image_encoder":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    if component == "cc_projection":
        return CCProjection(config["in_channel"], config["out_channel"])
    raise ValueError(f"unknown component '{component}'")


def file_keys(component: str, model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict under the names its weight file uses in the Hugging Face layouts
    (transformers 5 drops CLIPTextModel's `text_model.` prefix in memory; the files keep it)."""
    state = model.state_dict()
    if component == "text_encoder":
        return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
    return dict(state)


def folder_shapes(component: str, config: dict) -> dict[str, tuple[int, ...]]:
    """Weight-file key names and shapes for a config, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_component(component, config)
    return {k: tuple(v.shape) for k, v in file_keys(component, model).items()}


@dataclass
class Layout:
    """A checkpoint kind as folder components: configs and the rules to and from the original names."""

    kind: str  # sd, zero123, mvdream (the folder's prior)
    configs: dict[str, dict]
    rules: dict[str, list[Rule]]
    text_family: str = "openclip"


COMPONENTS = {"sd": ("unet", "vae", "text_encoder"), "zero123": ("unet", "vae", "image_encoder", "cc_projection"),
              "mvdream": ("unet", "vae", "text_encoder")}


def layout(kind: str, configs: dict[str, dict], text_family: str = "openclip",
           prefixes: dict[str, str] | None = None) -> Layout:
    rules = {c: component_rules(c, configs[c], list(folder_shapes(c, configs[c])), text_family=text_family,
                                prefix=(prefixes or {}).get(c))
             for c in COMPONENTS[kind]}
    return Layout(kind, configs, rules, text_family)


def to_folder(lay: Layout, state: dict[str, Tensor], source: str) -> dict[str, dict[str, Tensor]]:
    """Original state dict -> {component: weight-file tensors}; a missing tensor is a UserError."""
    missing = [r.original for rules in lay.rules.values() for r in rules if r.original not in state]
    if missing:
        raise UserError(f"{source}: lacks {len(missing)} tensors of a {lay.kind} model, e.g. '{missing[0]}'")
    out = {}
    for component, rules in lay.rules.items():
        out[component] = {t: v for r in rules for t, v in zip(r.targets, r.to_folder(state[r.original]))}
    return out


def to_original(lay: Layout, tensors: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """{component: weight-file tensors} -> the original checkpoint's state dict (the inverse of `to_folder`)."""
    return {r.original: r.to_original([tensors[c][t] for t in r.targets]) for c, rules in lay.rules.items() for r in rules}
