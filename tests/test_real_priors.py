"""Real pretrained priors (sd, zero123, mvdream) and `gen3d convert`, on tiny random-weight models.

The tiny models keep the real checkpoints' block structure (only widths shrink), so their weight
files carry the real key names; tests/data/real_priors/ holds the configs (with provenance) and
the full-size models' key lists, which `test_committed_key_lists` regenerates from the full
configs on the meta device (GEN3D_WRITE_KEY_LISTS=1 rewrites them).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.cameras import Cameras, orbit
from gen3d.cli import main
from gen3d.diffusion import VSD, sds_loss
from gen3d.errors import UserError
from gen3d.models.adapters import (
    backdrop_alpha,
    memory_guard,
    resolve_device,
    resolve_dtype,
)
from gen3d.models.adapters.checkpoints import write_component, write_tokenizer
from gen3d.models.adapters.convert import (
    CLIP_PROCESSOR,
    COMPONENTS,
    ORIGINAL_PREFIX,
    Layout,
    build_component,
    file_keys,
    folder_shapes,
    layout,
    to_folder,
    to_original,
)
from gen3d.models.adapters.mvdream import mvdream_camera
from gen3d.models.adapters.sd import view_direction
from gen3d.models.adapters.zero123 import relative_pose
from gen3d.models.prior import Observed, PriorOptions, load_prior
from gen3d.runs import read_manifest

DATA = Path(__file__).resolve().parent / "data" / "real_priors"
TOKENIZER = DATA / "tokenizer"
NAMES = ("sd15", "sd21", "zero123xl", "mvdream")
PREDICTION = {"sd15": "epsilon", "sd21": "v_prediction", "zero123xl": "epsilon", "mvdream": "epsilon"}


def spec(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def model_configs(s: dict, size: str) -> dict:
    return {c: s[size][c] for c in COMPONENTS[s["prior"]]}


def tiny_layout(name: str) -> Layout:
    s = spec(name)
    return layout(s["prior"], model_configs(s, "tiny"), s["text_family"])


@functools.cache
def tiny_tensors(name: str, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Default-initialised tiny components (seeded, without touching the global RNG's state); treat as read-only."""
    s = spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {c: file_keys(c, build_component(c, s["tiny"][c])) for c in COMPONENTS[s["prior"]]}


def write_tiny_folder(name: str, out: Path, tensors: dict, ashawkey: bool = False) -> Path:
    """A tiny model in the layout of the Hugging Face repos (no gen3d.json: as downloaded)."""
    s = spec(name)
    for component, weights in tensors.items():
        write_component(out / component, component, s["tiny"][component], weights)
    (out / "scheduler").mkdir()
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(s["tiny"]["scheduler"]))
    if "text_encoder" in tensors:
        write_tokenizer(out / "tokenizer", TOKENIZER, s["text_family"])
    if s["prior"] == "zero123":
        (out / "feature_extractor").mkdir()
        (out / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(CLIP_PROCESSOR))
    if ashawkey:  # MVDream's own UNet key names, no prefix, and its MultiViewUNetModel config
        from safetensors.torch import save_file

        prefix = ORIGINAL_PREFIX["unet"]
        original = to_original(tiny_layout(name), tensors)
        shutil.rmtree(out / "unet")
        (out / "unet").mkdir()
        save_file({k[len(prefix):]: v.contiguous() for k, v in original.items() if k.startswith(prefix)},
                  str(out / "unet" / "diffusion_pytorch_model.safetensors"))
        (out / "unet" / "config.json").write_text(json.dumps(s["tiny"]["ashawkey_unet"]))
    (out / "model_index.json").write_text(json.dumps({"_class_name": s["prior"], **{c: ["", ""] for c in tensors}}))
    return out


def original_checkpoint(name: str, tensors: dict) -> dict[str, torch.Tensor]:
    """A tiny original-format state dict, with the extra tensors real checkpoints carry and gen3d ignores."""
    from gen3d.diffusion.schedules import betas_for

    state = to_original(tiny_layout(name), tensors)
    betas = betas_for("scaled_linear", 1000, 0.00085, 0.012)
    state.update(betas=betas, alphas_cumprod=torch.cumprod(1 - betas, 0))
    s = spec(name)
    if s["prior"] == "zero123":  # OpenAI CLIP's unused text parts
        hidden = s["tiny"]["image_encoder"]["hidden_size"]
        state.update({f"cond_stage_model.model.{k}": torch.zeros(shape) for k, shape in
                      [("positional_embedding", (77, hidden)), ("token_embedding.weight", (192, hidden)),
                       ("ln_final.weight", (hidden,)), ("text_projection", (hidden, 60)), ("logit_scale", ())]})
    elif s["text_family"] == "clip":
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    else:  # OpenCLIP: projection, temperature and the last block, which SD's penultimate-layer features skip
        hidden, layers = s["tiny"]["text_encoder"]["hidden_size"], s["tiny"]["text_encoder"]["num_hidden_layers"]
        prefix = "cond_stage_model.model."
        state[prefix + "text_projection"] = torch.randn(hidden, hidden)
        state[prefix + "logit_scale"] = torch.tensor(4.6)
        block = f"{prefix}transformer.resblocks.{layers - 1}."
        state.update({k.replace(block, f"{prefix}transformer.resblocks.{layers}."): v.clone()
                      for k, v in state.items() if k.startswith(block)})
    return state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny folders for every model, plus MVDream in the ashawkey layout (same weights)."""
    root = tmp_path_factory.mktemp("real_priors")
    folders = {name: write_tiny_folder(name, root / name, tiny_tensors(name)) for name in NAMES}
    folders["mvdream-ashawkey"] = write_tiny_folder("mvdream", root / "mvdream-ashawkey", tiny_tensors("mvdream"),
                                                    ashawkey=True)
    return folders


@pytest.fixture(scope="module")
def priors(tiny) -> dict:
    return {name: load_prior(spec(name)["prior"], tiny[name]) for name in NAMES}


def cameras(n: int, elevation: float = 15.0, radius: float = 2.5) -> Cameras:
    return orbit(torch.full((n,), elevation), torch.arange(n) * (360.0 / n), radius, 40.0, 64, 64)


def observed() -> Observed:
    image = torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    return Observed(image, orbit([0.0], [0.0], 2.0, 40.0, 64, 64))


def sds_step(prior, views: int, obs: Observed | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One guided SDS step on random views: (loss, gradient on the views)."""
    g = torch.Generator().manual_seed(0)
    cams = cameras(views)
    cond, uncond = prior.condition("a red cube", cams, obs)
    rgba = torch.rand(views, 4, prior.image_size, prior.image_size, generator=g).requires_grad_(True)
    latents = prior.encode(rgba)
    loss, info = sds_loss(prior.guided(cond, uncond, 7.5), latents, g, cond, group=prior.views_per_set)
    loss.backward()
    assert info.t.unique_consecutive().numel() == views // prior.views_per_set  # one time per set
    return loss.detach(), rgba.grad


# ---- key lists and mapping tables ---------------------------------------------------------------

def reference_keys(name: str) -> dict[str, dict[str, list[str]]]:
    """Full-size key sets per component: the folder's weight file (from the model class on the meta
    device) and the original checkpoint (through gen3d's inverse mapping)."""
    s = spec(name)
    lay = layout(s["prior"], model_configs(s, "full"), s["text_family"])
    return {c: {"folder": sorted(folder_shapes(c, cfg)), "original": sorted(r.original for r in lay.rules[c])}
            for c, cfg in lay.configs.items()}


def committed_keys(name: str) -> dict[str, dict[str, list[str]]]:
    """The committed lists (one file per component architecture, shared between checkpoints)."""
    return {c: json.loads((DATA / "keys" / f"{file}.json").read_text()) for c, file in spec(name)["keys"].items()}


def original_keys(name: str) -> set[str]:
    return {k for lists in committed_keys(name).values() for k in lists["original"]}


@pytest.mark.parametrize("name", NAMES)
def test_committed_key_lists(name):
    keys = reference_keys(name)
    if os.environ.get("GEN3D_WRITE_KEY_LISTS"):
        (DATA / "keys").mkdir(exist_ok=True)
        for component, file in spec(name)["keys"].items():
            (DATA / "keys" / f"{file}.json").write_text(json.dumps(keys[component], indent=0) + "\n")
    assert keys == committed_keys(name)
    s = spec(name)
    lay = layout(s["prior"], model_configs(s, "full"), s["text_family"])
    for component, rules in lay.rules.items():  # every folder key is produced by exactly one rule
        assert sorted(t for r in rules for t in r.targets) == keys[component]["folder"]
    # names only: folder -> original -> folder on meta tensors keeps every key and shape
    meta = {c: {k: torch.empty(shape, device="meta") for k, shape in folder_shapes(c, cfg).items()}
            for c, cfg in lay.configs.items()}
    back = to_folder(lay, to_original(lay, meta), name)
    assert {c: {k: v.shape for k, v in t.items()} for c, t in back.items()} == \
           {c: {k: v.shape for k, v in t.items()} for c, t in meta.items()}


def test_original_names_are_the_real_ones():
    """Well-known names from the released checkpoints (independent of the tables)."""
    known = {
        "sd15": ["model.diffusion_model.input_blocks.3.0.op.weight", "model.diffusion_model.output_blocks.2.1.conv.weight",
                 "model.diffusion_model.output_blocks.5.2.conv.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                 "model.diffusion_model.input_blocks.4.0.skip_connection.weight", "model.diffusion_model.time_embed.2.bias",
                 "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
                 "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.post_quant_conv.weight",
                 "cond_stage_model.transformer.text_model.final_layer_norm.weight"],
        "sd21": ["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight", "cond_stage_model.model.ln_final.bias",
                 "cond_stage_model.model.positional_embedding", "model.diffusion_model.output_blocks.11.1.proj_out.weight"],
        "zero123xl": ["cc_projection.weight", "cond_stage_model.model.visual.proj", "cond_stage_model.model.visual.conv1.weight",
                      "cond_stage_model.model.visual.transformer.resblocks.23.mlp.c_proj.bias"],
        "mvdream": ["model.diffusion_model.camera_embed.0.weight", "model.diffusion_model.camera_embed.2.bias"],
    }
    for name, names in known.items():
        assert set(names) <= original_keys(name), name
    counts = {name: len(original_keys(name)) for name in NAMES}
    # SD 1.5: 686 UNet + 248 VAE + 196 CLIP-L text tensors; SD 2.1: 23 OpenCLIP blocks with fused q/k/v
    assert counts == {"sd15": 1130, "sd21": 686 + 248 + 23 * 12 + 4, "zero123xl": 686 + 248 + 24 * 12 + 8 + 2,
                      "mvdream": 690 + 248 + 23 * 12 + 4}


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_sd_tables_agree_with_diffusers_converters(name):
    """diffusers' single-file converters (LDM -> diffusers, no inverse) as an independent check."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    s, tensors = spec(name), tiny_tensors(name)
    state = original_checkpoint(name, tensors)
    with torch.device("meta"):
        unet_config = build_component("unet", s["tiny"]["unet"]).config
        vae_config = build_component("vae", s["tiny"]["vae"]).config
    expected = {"unet": convert_ldm_unet_checkpoint(state, unet_config), "vae": convert_ldm_vae_checkpoint(state, vae_config)}
    if s["text_family"] == "clip":
        expected["text_encoder"] = convert_ldm_clip_checkpoint(state)
    else:
        text = build_component("text_encoder", s["tiny"]["text_encoder"])
        expected["text_encoder"] = {k if k.startswith("text_model.") else f"text_model.{k}": v
                                    for k, v in convert_open_clip_checkpoint(text, state).items()}
    ours = to_folder(tiny_layout(name), state, name)
    for component, reference in expected.items():
        reference = {k: v for k, v in reference.items() if not k.endswith("position_ids")}
        assert set(reference) == set(ours[component]), component
        for key, value in reference.items():
            assert torch.equal(value.reshape(ours[component][key].shape), ours[component][key]), key


# ---- loading and running ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_loaded_key_sets_match_the_real_checkpoints(name, priors):
    prior = priors[name]
    committed = committed_keys(name)
    modules = {"unet": prior.unet, "vae": prior.vae, "text_encoder": getattr(getattr(prior, "prompts", None), "encoder", None),
               "image_encoder": getattr(prior, "image_encoder", None), "cc_projection": getattr(prior, "cc_projection", None)}
    for component in COMPONENTS[prior.name]:
        assert sorted(file_keys(component, modules[component])) == committed[component]["folder"], component


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_sd_sds_step_and_sampling(name, priors):
    prior = priors[name]
    assert (prior.views_per_set, prior.image_size, prior.max_observed) == (1, 64, 0)
    assert prior.denoiser.prediction == ("v" if name == "sd21" else "epsilon")
    cond, _ = prior.condition("a red cube", cameras(2))  # azimuth 0 (front) and 180 (back)
    assert not torch.equal(cond["encoder_hidden_states"][0], cond["encoder_hidden_states"][1])
    loss, grad = sds_step(prior, 2)
    assert torch.isfinite(loss) and grad.abs().sum() > 0 and grad[:, 3].abs().sum() > 0  # alpha composites onto white
    images = prior.sample("a red cube", cameras(2), steps=2, generator=torch.Generator().manual_seed(0))
    again = prior.sample("a red cube", cameras(2), steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 4, 64, 64) and torch.equal(images, again)
    assert images[:, :3].min() >= 0 and images[:, :3].max() <= 1
    torch.testing.assert_close(images[:, 3:], backdrop_alpha(images[:, :3]))  # keyed from the backdrop
    assert images[:, :3].std() > 0


def test_zero123_conditioning_sds_and_sampling(priors):
    prior, obs = priors["zero123xl"], observed()
    assert (prior.views_per_set, prior.max_observed, prior.pose_encoding) == (1, 1, "delta_radius")
    cond, uncond = prior.condition(None, cameras(2), obs)
    assert cond["encoder_hidden_states"].shape == (2, 1, 64) and cond["image_latents"].shape == (2, 4, 8, 8)
    assert torch.count_nonzero(uncond["encoder_hidden_states"]) == 0 and torch.count_nonzero(uncond["image_latents"]) == 0
    other = Observed(1 - obs.images, obs.cameras)  # another input view changes both conditionings
    cond2, _ = prior.condition(None, cameras(2), other)
    assert not torch.allclose(cond["image_latents"], cond2["image_latents"])
    assert not torch.allclose(cond["encoder_hidden_states"], cond2["encoder_hidden_states"])
    loss, grad = sds_step(prior, 2, obs)
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    images = prior.sample(None, cameras(2), obs, steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 4, 64, 64)
    torch.testing.assert_close(images[:, 3:], backdrop_alpha(images[:, :3]))
    with pytest.raises(UserError, match="needs an input image"):
        prior.condition(None, cameras(1))


def test_decoded_views_key_their_plain_backdrop_into_alpha():
    """The real priors have no alpha: an object on a plain backdrop (any colour) gets its mask."""
    views = torch.ones(2, 3, 16, 16)
    views[1] *= 0.5  # a grey backdrop
    views[:, :, 4:10, 6:12] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    alpha = backdrop_alpha(views)
    assert alpha.shape == (2, 1, 16, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:10, 6:12] = True
    assert torch.all(alpha[:, 0, inside] == 1) and torch.all(alpha[:, 0, ~inside] == 0)


def test_zero123_relative_pose():
    reference = orbit([0.0], [0.0], 2.5, 40.0, 64, 64)
    target = orbit([30.0, 0.0], [90.0, -45.0], 2.0, 40.0, 64, 64)
    pose = relative_pose(target, reference)
    expected = torch.tensor([[-torch.pi / 6, 1.0, 0.0, -0.5], [0.0, -(0.5**0.5), 0.5**0.5, -0.5]])
    assert torch.allclose(pose, expected, atol=1e-5)
    stable = relative_pose(target, orbit([20.0], [0.0], 2.5, 40.0, 64, 64), "cond_polar")
    assert torch.allclose(stable[:, 3], torch.full((2,), torch.pi * 70 / 180), atol=1e-5)  # input view's polar angle
    assert torch.allclose(stable[:, 0], torch.tensor([-torch.pi / 18, torch.pi / 9]), atol=1e-5)


def test_mvdream_views_attend_within_their_set(priors):
    prior = priors["mvdream"]
    assert (prior.views_per_set, prior.max_observed, prior.image_size) == (4, 0, 64)
    cams = cameras(8)
    cond, _ = prior.condition("a red cube", cams)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, 8, 8, generator=g)
    t = torch.full((8,), 500.0)
    base = prior.denoiser.output(x, t, cond)
    x2 = x.clone()
    x2[1] += torch.randn(4, 8, 8, generator=g)  # a view of the first set
    out = prior.denoiser.output(x2, t, cond)
    assert not torch.allclose(out[0], base[0])  # its set-mate sees it (joint self-attention)
    assert torch.equal(out[4:], base[4:])  # the other set does not
    cams2 = Cameras.cat([cams[[0, 1, 2]], cams[[5]], cams[[4, 5, 6, 7]]])  # another camera for view 3 only
    out = prior.denoiser.output(x, t, prior.condition("a red cube", cams2)[0])
    assert not torch.allclose(out[3], base[3]) and torch.equal(out[4:], base[4:])


def test_mvdream_sds_sampling_and_ashawkey_layout(priors, tiny):
    prior = priors["mvdream"]
    loss, grad = sds_step(prior, 4)
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    images = prior.sample("a red cube", cameras(4), steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 4, 64, 64)
    community = load_prior("mvdream", tiny["mvdream-ashawkey"])
    prefix = ORIGINAL_PREFIX["unet"]
    weights = sorted(k[len(prefix):] for k in committed_keys("mvdream")["unet"]["original"])
    from safetensors import safe_open

    with safe_open(str(tiny["mvdream-ashawkey"] / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == weights  # the tiny community file carries the real names
    cond, _ = prior.condition("a red cube", cameras(4))
    x, t = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2)), torch.full((4,), 300.0)
    # same weights; the UNet built on the meta device differs from from_pretrained's in the last float bits
    torch.testing.assert_close(community.denoiser.output(x, t, cond), prior.denoiser.output(x, t, cond),
                               rtol=1e-5, atol=1e-5)


def test_mvdream_camera_matches_mvdream_get_camera():
    """MVDream's own construction (y-up OpenGL look-at, then its OpenGL-to-Blender flip), re-derived here."""
    def mvdream_matrix(elevation, azimuth):
        el, az = torch.deg2rad(torch.tensor(elevation)), torch.deg2rad(torch.tensor(azimuth))
        pos = torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()])
        forward = -pos / pos.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
        right = right / right.norm()
        up = torch.linalg.cross(right, forward)
        c2w = torch.eye(4)
        c2w[:3, :3] = torch.stack([right, up, -forward], dim=1)
        c2w[:3, 3] = pos
        flip = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
        return (flip @ c2w).reshape(16)

    ours = mvdream_camera(orbit([15.0] * 4, [0.0, 90.0, 180.0, 270.0], 2.5, 40.0, 64, 64))
    theirs = torch.stack([mvdream_matrix(15.0, az + 90.0) for az in (0.0, 90.0, 180.0, 270.0)])
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_vsd_lora_copy_through_the_interface(priors):
    """VSD(prior.denoiser, prior.network, call=prior.network_call): the LoRA copy trains on a real UNet."""
    prior = priors["sd15"]
    cams = cameras(2)
    cond, uncond = prior.condition("a red cube", cams)
    g = torch.Generator().manual_seed(0)
    vsd = VSD(prior.denoiser, prior.network, call=prior.network_call, uncond=uncond, generator=g)
    latents = prior.encode(torch.rand(2, 4, 64, 64, generator=g)).requires_grad_(True)
    before = [p.clone() for p in vsd.lora_params]
    assert torch.isfinite(torch.tensor(vsd.update_lora(latents, g, cond)))
    assert any(not torch.equal(a, b) for a, b in zip(before, vsd.lora_params))
    loss, info = vsd.loss(latents, g, cond)
    loss.backward()
    assert torch.isfinite(latents.grad).all() and info.grad_norm > 0


def test_memory_options_on_cpu(tiny, priors):
    options = PriorOptions(dtype="bfloat16", attention_slicing=True, offload_text_encoder=True, gradient_checkpointing=True)
    prior = load_prior("sd", tiny["sd15"], "cpu", options)
    assert prior.unet.dtype == torch.bfloat16 and prior.unet.is_gradient_checkpointing
    assert prior.prompts.encoder.dtype == torch.float32  # offloaded encoders stay in float32 on the CPU
    loss, grad = sds_step(prior, 2)
    assert torch.isfinite(loss) and grad.abs().sum() > 0 and grad.dtype == torch.float32
    sliced = load_prior("mvdream", tiny["mvdream"], "cpu", PriorOptions(attention_slicing=True))
    cond, _ = sliced.condition("a red cube", cameras(4))
    x, t = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(7)), torch.full((4,), 400.0)
    torch.testing.assert_close(sliced.denoiser.output(x, t, cond), priors["mvdream"].denoiser.output(x, t, cond),
                               rtol=1e-5, atol=1e-5)  # slices of the joint 4-view attention give the same result


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_float16(name, tiny):
    options = PriorOptions(dtype="float16", attention_slicing=True, offload_text_encoder=True)
    prior = load_prior(spec(name)["prior"], tiny[name], "cuda", options)
    obs = observed() if prior.max_observed else None
    views = prior.views_per_set
    loss, grad = sds_step(prior, views, obs)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    images = prior.sample("a red cube", cameras(views), obs, steps=2, generator=torch.Generator().manual_seed(0))
    assert images.device.type == "cpu" and torch.isfinite(images).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_sds_step_at_256px(name, tmp_path):
    """Seconds per SDS step and peak GPU memory of the random-weight test model at 256 px in fp16;
    scripts/gpu_check.sh collects the rows from $GEN3D_GPU_REPORT (one JSON object a line)."""
    folder = write_tiny_folder(name, tmp_path / name, tiny_tensors(name))
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_factor = 2 ** (len(spec(name)["tiny"]["vae"]["block_out_channels"]) - 1)
    unet_config["sample_size"] = 256 // vae_factor  # the weights do not depend on the image size
    (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    prior = load_prior(spec(name)["prior"], folder, "cuda", PriorOptions(dtype="float16"))
    assert prior.image_size == 256
    obs = observed() if prior.max_observed else None
    sds_step(prior, prior.views_per_set, obs)  # warm-up: kernels chosen, caches filled
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps, started = 5, time.perf_counter()
    for _ in range(steps):
        loss, grad = sds_step(prior, prior.views_per_set, obs)
    torch.cuda.synchronize()
    row = {"bench": "sds-step", "model": name, "size": 256, "views": prior.views_per_set, "precision": "fp16",
           "seconds_per_step": round((time.perf_counter() - started) / steps, 4),
           "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if os.environ.get("GEN3D_GPU_REPORT"):
        with open(os.environ["GEN3D_GPU_REPORT"], "a") as handle:
            handle.write(json.dumps(row) + "\n")


# ---- gen3d convert ------------------------------------------------------------------------------

CONVERSIONS = [("sd15", "sd", "v1-5-tiny.ckpt"), ("sd21", "sd", "v2-1-tiny.safetensors"),
               ("zero123xl", "zero123", "zero123-xl-tiny.ckpt"), ("zero123xl", "stable-zero123", "stable_zero123-tiny.ckpt"),
               ("mvdream", "mvdream", "sd-v2.1-base-4view-tiny.pt")]


def save_original(state: dict, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif path.suffix == ".ckpt":  # Lightning checkpoints nest the weights
        torch.save({"state_dict": state, "global_step": 100000}, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize("name,kind,filename", CONVERSIONS)
def test_convert_original_checkpoints(name, kind, filename, priors, tmp_path, capsys):
    state = original_checkpoint(name, tiny_tensors(name))
    committed = original_keys(name)
    assert committed <= set(state) and len(set(state) - set(committed)) >= 2  # real names, plus ignored extras
    path = tmp_path / filename
    save_original(state, path)
    out = tmp_path / "converted"
    args = ["convert", str(path), "--from", kind, "--out", str(out), "--prediction", PREDICTION[name]]
    assert main(args + (["--tokenizer", str(TOKENIZER)] if name != "zero123xl" else [])) == 0
    assert f"--prior {spec(name)['prior']}" in capsys.readouterr().out
    converted = load_prior(spec(name)["prior"], out)
    reference = priors[name]
    views = reference.views_per_set * (1 if name == "mvdream" else 2)
    obs = observed() if reference.max_observed else None
    cond, _ = reference.condition("a red cube", cameras(views), obs)
    x, t = torch.randn(views, 4, 8, 8, generator=torch.Generator().manual_seed(4)), torch.full((views,), 700.0)
    assert torch.equal(converted.denoiser.output(x, t, cond), reference.denoiser.output(x, t, cond))
    if name == "zero123xl":  # (the conditioning images are resized to each model's image size, so compare modules)
        pixels = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(6))
        assert torch.equal(converted.image_encoder(pixel_values=pixels).image_embeds,
                           reference.image_encoder(pixel_values=pixels).image_embeds)
        assert torch.equal(converted.cc_projection(cond["encoder_hidden_states"]), reference.cc_projection(cond["encoder_hidden_states"]))
    else:
        assert torch.equal(converted.prompts(["a red cube"]), reference.prompts(["a red cube"]))
    rgb = torch.rand(views, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(converted.vae_latents(rgb), reference.vae_latents(rgb))
    assert converted.image_size == {"sd15": 512, "sd21": 768}.get(name, 256)  # the checkpoint's native size
    if name == "zero123xl":
        assert converted.pose_encoding == ("cond_polar" if kind == "stable-zero123" else "delta_radius")


# ---- errors -------------------------------------------------------------------------------------

def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_folder_errors_name_what_is_missing(tiny, tmp_path):
    with pytest.raises(UserError, match="needs --model-path"):
        load_prior("sd", None)
    with pytest.raises(UserError, match="use --prior zero123"):
        load_prior("sd", tiny["zero123xl"])
    with pytest.raises(UserError, match="use --prior mvdream"):
        load_prior("zero123", tiny["mvdream-ashawkey"])
    folder = copy_of(tiny["sd15"], tmp_path)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserError, match=r"vae: no weights \(diffusion_pytorch_model.safetensors"):
        load_prior("sd", folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(UserError, match=r"unet/config.json: missing"):
        load_prior("sd", folder)
    folder = copy_of(tiny["sd21"], tmp_path)
    from safetensors.torch import load_file, save_file

    weights = folder / "text_encoder" / "model.safetensors"
    state = load_file(weights)
    del state["text_model.final_layer_norm.weight"]
    save_file(state, str(weights))
    with pytest.raises(UserError, match=r"text_encoder: its weights lack or misshape 1 tensors.*final_layer_norm.weight"):
        load_prior("sd", folder)


def test_convert_errors_are_one_line(tmp_path, capsys):
    state = original_checkpoint("zero123xl", tiny_tensors("zero123xl"))
    path = tmp_path / "zero123.ckpt"
    save_original(state, path)
    out = str(tmp_path / "out")
    assert main(["convert", str(path), "--from", "sd", "--out", out]) == 2
    assert "looks like a zero123 checkpoint, not sd; use --from zero123" in capsys.readouterr().err
    del state["model.diffusion_model.middle_block.2.out_layers.3.weight"]
    save_original(state, path)
    assert main(["convert", str(path), "--from", "zero123", "--out", out]) == 2
    assert "lacks 1 tensors of a zero123 model, e.g. 'model.diffusion_model.middle_block.2.out_layers.3.weight'" \
        in capsys.readouterr().err
    del state["model.diffusion_model.out.2.weight"]  # a tensor the config is read from
    save_original(state, path)
    assert main(["convert", str(path), "--from", "zero123", "--out", out]) == 2
    assert "lacks 'model.diffusion_model.out.2.weight' (not a complete checkpoint" in capsys.readouterr().err
    sd = tmp_path / "sd.safetensors"
    save_original(original_checkpoint("sd15", tiny_tensors("sd15")), sd)
    assert main(["convert", str(sd), "--from", "sd", "--out", out]) == 2
    assert "pass --tokenizer DIR" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    assert main(["convert", str(sd), "--from", "sd", "--out", out, "--tokenizer", str(TOKENIZER)]) == 2
    assert "already exists" in capsys.readouterr().err
    torch.save({"state_dict": {}, "callback": PriorOptions()}, tmp_path / "pickled.ckpt")
    assert main(["convert", str(tmp_path / "pickled.ckpt"), "--from", "sd", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists() and not list(tmp_path.glob(".o2.*"))


def test_out_of_memory_lists_the_options(priors, monkeypatch):
    with pytest.raises(UserError, match=r"needs about 1536 MiB.*attention_slicing=true"), memory_guard("sd", 1536):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    prior = priors["sd15"]

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(prior.unet, "forward", exhausted)
    cond, _ = prior.condition("a cube", cameras(1))
    with pytest.raises(UserError, match=r"out of GPU memory in the 'sd' prior: it needs about \d+ MiB.*dtype=float16"):
        prior.denoiser.output(torch.zeros(1, 4, 8, 8), 10, cond)


def test_devices_and_dtypes():
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserError, match="float16 runs on cuda or mps only"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_view_direction_follows_dreamfusion():
    assert [view_direction(10, az) for az in (0, 30, 60, 120, 170, -170, -90, -40)] == \
           ["front", "front", "side", "side", "back", "back", "side", "front"]
    assert view_direction(70, 0) == "overhead"
    assert view_direction(10, 90, front_azimuth=90) == "front" and view_direction(10, 0, front_azimuth=-90) == "side"


# ---- the pipelines end to end, through the command line -----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "scenes" / "shapeworld-snowman"
PHOTO = SCENE / "train" / "000.png"
#: the configs/ci presets, cut further: one thread, a few steps (so a low surface level), no turntable files
QUICK = ["recon.threads=1", "recon.steps=10", "export.threshold=0.3", "export.video=false", "export.gif=false"]
DISTILL = ["distill.steps=2"]


def run_job_cli(args: list[str], preset: str, out: Path, overrides: list[str]) -> dict:
    """`gen3d ARGS --config configs/ci/PRESET --out OUT --set ...`: exit 0, a finished run with a mesh."""
    sets = [item for o in QUICK + overrides for item in ("--set", o)]
    assert main([*args, "--config", str(ROOT / "configs" / "ci" / preset), "--out", str(out), *sets]) == 0
    manifest = read_manifest(out)
    assert manifest["status"] == "done" and all(s["status"] == "done" for s in manifest["stages"])
    assert all((out / a["path"]).is_file() for a in manifest["artifacts"])
    assert {a["path"] for a in manifest["artifacts"] if a["role"] == "mesh"} == {"mesh.glb", "mesh.ply", "mesh.obj"}
    return manifest


def losses(run: Path) -> list[float]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e.get("stage") == "distill" and "loss" in e]


@pytest.mark.parametrize("name,method", [("sd15", "sds"), ("sd21", "vsd"), ("mvdream", "mv-recon"),
                                         ("mvdream-ashawkey", "sds")])
def test_text_to_3d_with_real_priors(name, method, tiny, tmp_path):
    prior = "sd" if name.startswith("sd") else "mvdream"
    manifest = run_job_cli(["text-to-3d", "a red cube", "--prior", prior, "--model-path", str(tiny[name]),
                            "--method", method], "text-to-3d.yaml", tmp_path / "run",
                           ["views.passes=[4]"] + DISTILL)
    assert (manifest["config"]["prior"], manifest["config"]["model_path"]) == (prior, str(tiny[name]))
    if method == "mv-recon":  # one set of MVDream's 4 views at the tiny model's 64 pixels, keyed alpha
        views = [a["path"] for a in manifest["artifacts"] if a["path"].startswith("views/")]
        assert views == [f"views/{i:03d}.png" for i in range(4)]
        rgba = torch.from_numpy(np.array(Image.open(tmp_path / "run" / views[0])))
        assert rgba.shape == (64, 64, 4) and rgba[..., 3].float().std() > 0
    else:
        assert len(losses(tmp_path / "run")) == 2 and all(np.isfinite(losses(tmp_path / "run")))
        assert ("lora" in torch.load(tmp_path / "run" / "ckpt" / "distill.pt", weights_only=False)["state"]) == \
               (method == "vsd")


@pytest.mark.parametrize("method", ["nv-recon", "sds"])
def test_image_to_3d_with_zero123(method, tiny, tmp_path):
    manifest = run_job_cli(["image-to-3d", str(PHOTO), "--prior", "zero123", "--model-path", str(tiny["zero123xl"]),
                            "--method", method], "image-to-3d.yaml", tmp_path / "run",
                           ["views.passes=[2]"] + DISTILL)
    assert manifest["config"]["prior"] == "zero123" and manifest["inputs"]["image"] == str(PHOTO)
    if method == "nv-recon":  # the photo, then 2 generated views
        assert sorted(a["path"] for a in manifest["artifacts"] if a["path"].startswith("views/")) == \
               [f"views/{i:03d}.png" for i in range(3)]
    else:
        assert len(losses(tmp_path / "run")) == 2 and all(np.isfinite(losses(tmp_path / "run")))


def test_fewview_reconstruct_with_zero123(tiny, tmp_path):
    manifest = run_job_cli(["reconstruct", str(SCENE), "--views", "3", "--prior", "zero123"], "fewview.yaml",
                           tmp_path / "run", [f"prior.model_path={tiny['zero123xl']}", "prior.novel_views=2"])
    generated = [a["path"] for a in manifest["artifacts"] if a["path"].startswith("generated/")]
    assert generated == ["generated/000.png", "generated/001.png"] and np.isfinite(manifest["metrics"]["psnr"])


def test_converted_checkpoint_runs_image_to_3d(tmp_path):
    """Stable Zero123 exists only as an original .ckpt: convert it, then a job on the folder (256 px)."""
    path = tmp_path / "stable_zero123.ckpt"
    save_original(original_checkpoint("zero123xl", tiny_tensors("zero123xl")), path)
    folder = tmp_path / "stable-zero123"
    assert main(["convert", str(path), "--from", "stable-zero123", "--out", str(folder)]) == 0
    manifest = run_job_cli(["image-to-3d", str(PHOTO), "--prior", "zero123", "--model-path", str(folder),
                            "--method", "sds"], "image-to-3d.yaml", tmp_path / "run",
                           ["distill.steps=1"])
    assert manifest["config"]["model_path"] == str(folder) and len(losses(tmp_path / "run")) == 1
    assert json.loads((folder / "gen3d.json").read_text())["pose_encoding"] == "cond_polar"


@pytest.mark.parametrize("name,kind,missing", [
    ("sd15", "text-to-3d", "unet/config.json"),
    ("mvdream", "text-to-3d", "scheduler/scheduler_config.json"),
    ("zero123xl", "image-to-3d", "cc_projection/config.json"),
], ids=["sd-unet", "mvdream-scheduler", "zero123-cc_projection"])
def test_incomplete_folder_exits_2_naming_the_missing_file(name, kind, missing, tiny, tmp_path, capsys):
    folder = copy_of(tiny[name], tmp_path)
    shutil.rmtree(folder / missing.split("/")[0])  # the whole component folder
    prior = spec(name)["prior"]
    first = "a red cube" if kind == "text-to-3d" else str(PHOTO)
    method = ["--method", "sds"] if prior == "sd" else []
    out = tmp_path / "run"
    assert main([kind, first, "--prior", prior, "--model-path", str(folder), *method, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {folder / missing}: missing (is --model-path the right kind of model folder?)"
    assert not out.exists()  # no half-made run folder is left behind
