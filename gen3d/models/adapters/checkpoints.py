"""Original checkpoint files: reading them (safetensors, or pickles only when trusted), telling
their kind and text-encoder family, inferring each component's config from its tensor shapes, and
writing the converted model folder (`convert_checkpoint`, what `gen3d convert` runs). The name
tables between the two layouts are `gen3d.models.adapters.convert`'s.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor

import gen3d
from gen3d.errors import UserError
from gen3d.io import blocking_file, shared_mode
from gen3d.models.prior import check_safetensors
from gen3d.models.adapters.convert import (
    CLIP_PROCESSOR,
    CLIP_TEXT_PREFIX,
    COMPONENTS,
    KINDS,
    ORIGINAL_PREFIX,
    SD_BETAS,
    VAE_SCALING,
    Layout,
    build_component,
    folder_shapes,
    layout,
    to_folder,
)

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

        check_safetensors(path)  # random or truncated bytes: a one-line error, not the library's
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
    except Exception as exc:  # random or foreign bytes make the unpickler fail in any of many ways
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {reason})") from exc
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
    check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(shared_mode(folder=True))  # mkdtemp makes it private; a model folder is shareable
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


def check_new_folder(out: Path) -> None:
    """`--out` must name a new folder whose parents are folders (or can be made)."""
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new --out folder")
    blocking = blocking_file(out.parent)
    if blocking is not None:
        raise UserError(f"{out}: --out lies under the file {blocking}, not a folder")


def convert_checkpoint(kind: str, path: Path, out: Path, *, tokenizer: Path | None = None,
                       prediction: str = "epsilon", trust_pickle: bool = False) -> Layout:
    """`gen3d convert --from KIND PATH --out DIR`: an original checkpoint to a folder `--prior` loads."""
    if prediction not in ("epsilon", "v_prediction"):
        raise UserError(f"--prediction must be epsilon or v_prediction, got '{prediction}'")
    path, source = Path(path), str(path)
    check_new_folder(Path(out))  # before the (long) read of the checkpoint
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
