"""`gen3d convert`: original checkpoints to the model folders the adapters load.

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

import json
import math
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

import gen3d
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


# ---- configs from an original checkpoint's shapes -----------------------------------------------

def _count(shapes: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m[1] for k in shapes if (m := regex.match(k))})


def infer_unet_config(shapes: dict[str, tuple], *, sample_size: int, heads: int | None = None,
                      head_channels: int | None = None, upcast_attention: bool = False) -> dict:
    """A UNet2DConditionModel config from LDM UNet weight shapes (keys without prefix).

    The number of attention heads is not in the weights: SD 1.x and Zero123 use 8 heads
    (`heads=8`), SD 2.x and MVDream 64 channels per head (`head_channels=64`).
    """
    levels, n = [], 1  # (channels, has attention, resnets) per level, walking input_blocks in order
    while f"input_blocks.{n}.0.in_layers.2.weight" in shapes:
        channels, attention, resnets = 0, False, 0
        while (key := f"input_blocks.{n}.0.in_layers.2.weight") in shapes:
            channels, resnets = shapes[key][0], resnets + 1
            attention = attention or f"input_blocks.{n}.1.proj_in.weight" in shapes
            n += 1
        levels.append((channels, attention, resnets))
        n += 1 if f"input_blocks.{n}.0.op.weight" in shapes else 0
    if not levels or len({lv[2] for lv in levels}) != 1 or "middle_block.1.proj_in.weight" not in shapes:
        raise ValueError("unsupported UNet layout: no levels, levels with different block counts or no middle attention")
    channels = [lv[0] for lv in levels]
    attention = [lv[1] for lv in levels]
    proj_in = next(v for k, v in shapes.items() if k.endswith(".1.proj_in.weight"))
    context = next(v for k, v in shapes.items() if k.endswith("attn2.to_k.weight"))[1]
    depth = _count(shapes, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    config = {
        "sample_size": sample_size,
        "in_channels": shapes["input_blocks.0.0.weight"][1],
        "out_channels": shapes["out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": levels[0][2],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention[::-1]],
        "cross_attention_dim": context,
        "attention_head_dim": heads if heads is not None else [max(c // head_channels, 1) for c in channels],
        "use_linear_projection": len(proj_in) == 2,
        "transformer_layers_per_block": depth,
        "upcast_attention": upcast_attention,
    }
    if "camera_embed.0.weight" in shapes:  # MVDream: camera MLP added to the time embedding
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=shapes["camera_embed.0.weight"][1])
    return config


def infer_config(fn, shapes: dict[str, tuple], prefix: str, source: str, *args, **kwargs) -> dict:
    """`fn` on the shapes under `prefix`; a tensor it needs that is missing, or a layout it cannot
    express, becomes a UserError naming `source`."""
    try:
        return fn(_strip(shapes, prefix), *args, **kwargs)
    except KeyError as exc:
        raise UserError(f"{source}: lacks '{prefix}{exc.args[0]}' (not a complete checkpoint of this kind?)") from exc
    except StopIteration as exc:
        raise UserError(f"{source}: has no cross-attention tensors under '{prefix}'") from exc
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from exc


def infer_vae_config(shapes: dict[str, tuple], sample_size: int) -> dict:
    levels = _count(shapes, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    return {
        "sample_size": sample_size,
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "block_out_channels": [shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(levels)],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": _count(shapes, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"),
        "latent_channels": shapes["post_quant_conv.weight"][1],
        "scaling_factor": VAE_SCALING,
    }


def infer_text_config(shapes: dict[str, tuple], family: str, token_ids: dict[str, int]) -> dict:
    """CLIPTextConfig fields: SD 1.x's HF CLIP-L text model (all layers, quick GELU) or SD 2.x's
    OpenCLIP-H text tower, whose last block SD skips (penultimate-layer features, GELU)."""
    if family == "clip":
        p = "text_model."
        vocab, hidden = shapes[p + "embeddings.token_embedding.weight"]
        positions = shapes[p + "embeddings.position_embedding.weight"][0]
        layers = _count(shapes, r"text_model\.encoder\.layers\.(\d+)\.")
        inner = shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]
        act, projection = "quick_gelu", hidden
    else:
        vocab, hidden = shapes["token_embedding.weight"]
        positions = shapes["positional_embedding"][0]
        layers = _count(shapes, r"transformer\.resblocks\.(\d+)\.") - 1
        inner = shapes["transformer.resblocks.0.mlp.c_fc.weight"][0]
        act, projection = "gelu", shapes.get("text_projection", (hidden, hidden))[1]
    return {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inner, "num_hidden_layers": layers,
            "num_attention_heads": max(hidden // 64, 1), "max_position_embeddings": positions, "hidden_act": act,
            "projection_dim": projection, **token_ids}


def infer_vision_config(shapes: dict[str, tuple]) -> dict:
    """CLIPVisionConfig fields of OpenAI CLIP's ViT (Zero123's image encoder, ViT-L/14 at 224 pixels)."""
    hidden, _, patch, _ = shapes["visual.conv1.weight"]
    grid = math.isqrt(shapes["visual.positional_embedding"][0] - 1)
    return {"hidden_size": hidden, "intermediate_size": shapes["visual.transformer.resblocks.0.mlp.c_fc.weight"][0],
            "num_hidden_layers": _count(shapes, r"visual\.transformer\.resblocks\.(\d+)\."),
            "num_attention_heads": max(hidden // 64, 1), "patch_size": patch, "image_size": patch * grid,
            "projection_dim": shapes["visual.proj"][1], "hidden_act": "quick_gelu"}


# ---- reading and writing ------------------------------------------------------------------------

def read_checkpoint(path: Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """The tensors of a `.safetensors`, `.ckpt` or `.pt` file (a nested `state_dict` is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
        except RuntimeError as exc:  # files from before torch 1.6's zip format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: holds pickled objects besides tensors ({reason}); "
                        "re-run with --trust-pickle only if you trust where the file came from") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise UserError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return {k: v for k, v in data.items() if isinstance(v, Tensor)}


def _strip(shapes: dict[str, tuple], prefix: str) -> dict[str, tuple]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def detect_kind(state: dict[str, Tensor], source: str) -> str:
    """sd, zero123 or mvdream, from keys only these checkpoints have."""
    if "model.diffusion_model.input_blocks.0.0.weight" not in state:
        raise UserError(f"{source}: not a latent-diffusion checkpoint (no model.diffusion_model.* tensors)")
    if "cc_projection.weight" in state:
        return "zero123"
    if "model.diffusion_model.camera_embed.0.weight" in state:
        return "mvdream"
    return "sd"


def text_family(state: dict, source: str) -> str:
    if f"{CLIP_TEXT_PREFIX}text_model.embeddings.token_embedding.weight" in state:
        return "clip"
    if f"{ORIGINAL_PREFIX['text_encoder']}token_embedding.weight" in state:
        return "openclip"
    raise UserError(f"{source}: no text encoder (cond_stage_model.transformer.* or cond_stage_model.model.*)")


def _check_schedule(state: dict[str, Tensor], source: str) -> None:
    """Every kind here trains on SD's schedule; a checkpoint that stores other betas is refused."""
    if "betas" not in state:
        return
    from gen3d.diffusion.schedules import betas_for

    expected = betas_for(SD_BETAS["beta_schedule"], SD_BETAS["num_train_timesteps"], SD_BETAS["beta_start"], SD_BETAS["beta_end"])
    if state["betas"].shape != expected.shape or not torch.allclose(state["betas"].float(), expected, atol=1e-6):
        raise UserError(f"{source}: its noise schedule (betas) is not Stable Diffusion's scaled_linear 0.00085-0.012")


def checked_kind(kind: str, state: dict[str, Tensor], source: str) -> str:
    """The folder prior for `kind` (sd, zero123, stable-zero123, mvdream), refusing other checkpoints."""
    if kind not in KINDS:
        raise UserError(f"unknown checkpoint kind '{kind}'; choose one of: {', '.join(KINDS)}")
    found = detect_kind(state, source)
    wanted = "zero123" if kind == "stable-zero123" else kind
    if found != wanted:
        raise UserError(f"{source}: looks like a {found} checkpoint, not {kind}; use --from {found}")
    return wanted


def checkpoint_layout(prior: str, family: str, state: dict[str, Tensor], source: str, *,
                      prediction: str = "epsilon", token_ids: dict[str, int] | None = None) -> Layout:
    """Configs (inferred from the tensor shapes) and rules for an original checkpoint of a folder prior."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    image_size = 256 if prior in ("zero123", "mvdream") else 768 if prediction == "v_prediction" else 512
    heads = {"heads": 8} if family == "clip" else {"head_channels": 64}

    configs = {
        "unet": infer_config(infer_unet_config, shapes, ORIGINAL_PREFIX["unet"], source, sample_size=image_size // 8,
                             **heads, upcast_attention=prediction == "v_prediction"),
        "vae": infer_config(infer_vae_config, shapes, ORIGINAL_PREFIX["vae"], source, image_size),
    }
    if prior == "zero123":
        if "cond_stage_model.model.visual.conv1.weight" not in state:
            raise UserError(f"{source}: has no CLIP image encoder (cond_stage_model.model.visual.*)")
        configs["image_encoder"] = infer_config(infer_vision_config, shapes, ORIGINAL_PREFIX["image_encoder"], source)
        out_channel, in_channel = shapes["cc_projection.weight"]
        configs["cc_projection"] = {"in_channel": in_channel, "out_channel": out_channel}
    else:
        text_prefix = CLIP_TEXT_PREFIX if family == "clip" else ORIGINAL_PREFIX["text_encoder"]
        configs["text_encoder"] = infer_config(infer_text_config, shapes, text_prefix, source, family, token_ids or {})
    return layout(prior, configs, family)


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def write_component(folder: Path, component: str, config: dict, tensors: dict[str, Tensor]) -> None:
    """One component folder in the Hugging Face layout: config.json and its safetensors weights."""
    expected = folder_shapes(component, config)
    wrong = [k for k in expected if k not in tensors or tuple(tensors[k].shape) != expected[k]]
    if wrong or len(tensors) != len(expected):
        raise UserError(f"{folder.name}: converted weights do not fit the inferred config (first: '{(wrong or list(tensors))[0]}')")
    folder.mkdir(parents=True, exist_ok=True)
    if component in ("unet", "vae"):
        with torch.device("meta"):
            build_component(component, config).save_config(folder)
        _save_tensors(tensors, folder / "diffusion_pytorch_model.safetensors")
    elif component == "cc_projection":
        (folder / "config.json").write_text(json.dumps({"_class_name": "CCProjection", **config}, indent=2) + "\n")
        _save_tensors(tensors, folder / "diffusion_pytorch_model.safetensors")
    else:
        with torch.device("meta"):
            build_component(component, config).config.save_pretrained(folder)
        _save_tensors(tensors, folder / "model.safetensors")


def write_scheduler(folder: Path, prediction: str) -> None:
    from diffusers import DDIMScheduler

    DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                  prediction_type=prediction).save_config(folder)


def write_tokenizer(folder: Path, source: Path, family: str) -> None:
    """SD 1.x pads prompts with <|endoftext|>, OpenCLIP (SD 2.x, MVDream) with '!' (token 0)."""
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(f"{source}: not a CLIP tokenizer folder (vocab.json and merges.txt)") from exc
    tokenizer.pad_token = "!" if family == "openclip" else "<|endoftext|>"
    tokenizer.save_pretrained(folder)


def tokenizer_ids(source: Path, family: str) -> dict[str, int]:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(source)
    pad = tokenizer.convert_tokens_to_ids("!" if family == "openclip" else "<|endoftext|>")
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad}


_INDEX = {
    "sd": "StableDiffusionPipeline",
    "zero123": "Zero1to3StableDiffusionPipeline",  # the community diffusers layout (kxic/zero123-xl)
    "mvdream": "MVDreamPipeline",
}
_LIBRARY = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "feature_extractor": ["transformers", "CLIPImageProcessor"], "cc_projection": ["pipeline_zero1to3", "CCProjection"],
            "scheduler": ["diffusers", "DDIMScheduler"]}


def write_folder(out: Path, lay: Layout, tensors: dict[str, dict[str, Tensor]], *, prediction: str = "epsilon",
                 tokenizer: Path | None = None, meta: dict | None = None) -> None:
    """A complete model folder (written beside `out`, then renamed into place)."""
    import diffusers

    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for component in COMPONENTS[lay.kind]:
            write_component(tmp / component, component, lay.configs[component], tensors[component])
        write_scheduler(tmp / "scheduler", prediction)
        extra = ["scheduler"]
        if tokenizer is not None:
            write_tokenizer(tmp / "tokenizer", tokenizer, lay.text_family)
            extra.append("tokenizer")
        if lay.kind == "zero123":
            (tmp / "feature_extractor").mkdir()
            (tmp / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(CLIP_PROCESSOR, indent=2) + "\n")
            extra.append("feature_extractor")
        index = {"_class_name": _INDEX[lay.kind], "_diffusers_version": diffusers.__version__}
        index.update({c: _LIBRARY[c] for c in sorted([*COMPONENTS[lay.kind], *extra])})
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        gen3d_meta = {"prior": lay.kind, "gen3d_version": gen3d.__version__, **(meta or {})}
        (tmp / "gen3d.json").write_text(json.dumps(gen3d_meta, indent=2) + "\n")
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def convert_checkpoint(kind: str, path: Path, out: Path, *, tokenizer: Path | None = None,
                       prediction: str = "epsilon", trust_pickle: bool = False) -> Layout:
    """`gen3d convert --from KIND PATH --out DIR`: an original checkpoint to a folder `--prior` loads."""
    if prediction not in ("epsilon", "v_prediction"):
        raise UserError(f"--prediction must be epsilon or v_prediction, got '{prediction}'")
    path, source = Path(path), str(path)
    state = read_checkpoint(path, trust_pickle)
    prior = checked_kind(kind, state, source)
    # Zero123's CLIP is OpenAI's (8 heads per UNet attention, like SD 1.x); it has no text encoder
    family = "clip" if prior == "zero123" else text_family(state, source)
    if prior != "zero123" and tokenizer is None:
        version = "2.x" if family == "openclip" else "1.x"
        raise UserError(f"{path}: a checkpoint holds no tokenizer; pass --tokenizer DIR (the tokenizer/ folder of a "
                        f"Stable Diffusion {version} diffusers model, with vocab.json and merges.txt)")
    _check_schedule(state, source)
    ids = tokenizer_ids(tokenizer, family) if tokenizer is not None else None
    lay = checkpoint_layout(prior, family, state, source, prediction=prediction, token_ids=ids)
    tensors = to_folder(lay, state, source)
    meta = {"converted_from": path.name, "checkpoint_kind": kind}
    if prior == "zero123":
        meta["pose_encoding"] = "cond_polar" if kind == "stable-zero123" else "delta_radius"
    write_folder(out, lay, tensors, prediction=prediction, tokenizer=tokenizer if prior != "zero123" else None, meta=meta)
    return lay
