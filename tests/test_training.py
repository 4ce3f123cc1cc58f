"""The shared trainer (data order, EMA, resume, DDP) and the CI smoke training of the multi-view prior."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gen3d.cli import main
from gen3d.errors import UserError
from gen3d.training.trainer import (
    EMA,
    Trainer,
    TrainOptimConfig,
    batch_indices,
    save_loss_curve,
    smooth,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED_AE = REPO / "gen3d" / "assets" / "priors" / "shapeworld-mv" / "autoencoder"


def test_batch_indices_walk_epochs_and_split_ranks():
    first_epoch = np.concatenate([batch_indices(10, 5, step, seed=3) for step in (0, 1)])
    assert sorted(first_epoch.tolist()) == list(range(10))  # one epoch = one permutation
    crossing = batch_indices(10, 4, 2, seed=3)  # items 8..11: the end of epoch 0 and start of epoch 1
    assert crossing[:2].tolist() == first_epoch[8:].tolist()
    ranks = [batch_indices(10, 4, 1, seed=3, rank=r, world=2) for r in (0, 1)]
    assert np.concatenate(ranks).tolist() == batch_indices(10, 4, 1, seed=3).tolist()
    assert not np.array_equal(batch_indices(10, 5, 0, seed=3), batch_indices(10, 5, 0, seed=4))


def test_ema_follows_with_warmup():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.shadow["weight"].clone()
    ema.update(model)  # first update uses decay min(0.99, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], 0.1 * before + 0.9 * torch.ones(1, 2))


def _toy_problem():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    return x, y


def _toy_trainer(steps: int = 6) -> Trainer:
    torch.manual_seed(1)
    return Trainer(nn.Linear(4, 2), TrainOptimConfig(steps=steps, lr=0.1, warmup_steps=2, grad_clip=0.5, ema_decay=0.9))


def test_trainer_resume_is_bit_identical():
    x, y = _toy_problem()

    def loss(net):
        return ((net(x) - y) ** 2).mean()

    straight = _toy_trainer()
    for _ in range(6):
        straight.step(loss)
    first = _toy_trainer()
    for _ in range(3):
        first.step(loss)
    resumed = _toy_trainer()
    resumed.load_state_dict(first.state_dict())
    for _ in range(3):
        resumed.step(loss)
    for key, value in straight.state_dict()["model"].items():
        assert torch.equal(value, resumed.state_dict()["model"][key])
    assert straight.losses == resumed.losses and straight.losses[-1] < straight.losses[0]
    assert torch.equal(straight.ema.shadow["weight"], resumed.ema.shadow["weight"])


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, y = _toy_problem()
        trainer = _toy_trainer()
        idx = torch.from_numpy(batch_indices(8, 8, 0, seed=0, rank=rank, world=world))
        trainer.step(lambda net: ((net(x[idx]) - y[idx]) ** 2).mean())
        torch.save({"model": trainer.model.state_dict(), "loss": trainer.losses[-1]}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other still talks to it (SIGABRT)
    finally:
        dist.destroy_process_group()


def test_ddp_step_with_two_cpu_processes_matches_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, y = _toy_problem()
    single = _toy_trainer()
    idx = torch.from_numpy(batch_indices(8, 8, 0, seed=0))
    single.step(lambda net: ((net(x[idx]) - y[idx]) ** 2).mean())
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for key, value in single.model.state_dict().items():
        assert torch.equal(results[0]["model"][key], results[1]["model"][key])  # ranks agree exactly
        assert torch.allclose(results[0]["model"][key], value, atol=1e-6)  # = the full-batch step
    assert abs(results[0]["loss"] - single.losses[0]) < 1e-6  # the logged loss is the global one
    assert not torch.equal(single.model.weight, _toy_trainer().model.weight)  # the step moved it


def test_loss_curve_png(tmp_path):
    path = save_loss_curve([1.0 / (i + 1) for i in range(100)], tmp_path / "curve.png", "toy")
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (360, 640, 3) and (image[..., 2] > 150).sum() > 100  # the blue curve is drawn
    assert np.allclose(smooth([1, 3, 5], 2), [1, 2, 4])


@pytest.mark.skipif(not (SHIPPED_AE / "config.json").is_file(), reason="shipped autoencoder absent")
def test_ci_smoke_training_lowers_the_loss_and_exports_a_loadable_prior(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names the shipped autoencoder by repository path
    run = tmp_path / "run"
    code = main(["train", "configs/ci/train-smoke.yaml", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                 "--out", str(run), "--seed", "0"])
    assert code == 0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["stage"] == "multiview" and "loss" in e]
    # a zero-initialised v-predictor starts at E[v^2] = 1; learning takes the loss well below it
    assert len(losses) == 12 and np.mean(losses[-3:]) < min(0.85, losses[0] - 0.1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["metrics"]["steps"] == 120
    assert any(a["role"] == "curve" for a in manifest["artifacts"])
    assert (run / "ckpt" / "multiview.pt").is_file()

    from gen3d.models.shapeworld_prior import load
    from gen3d.shapeworld.scenes import eval_cameras

    prior = load(run / "prior")
    out = prior.sample("a red cube", eval_cameras(64)[:4], steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, 64, 64) and torch.isfinite(out).all()

    # scripts/export_prior_checkpoint.py: the run's last checkpoint, with the shipped upsampler carried over
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from export_prior_checkpoint import main as export_checkpoint
    finally:
        sys.path.pop(0)
    export_checkpoint(run, tmp_path / "exported", upsampler_from=SHIPPED_AE.parent)
    exported = load(tmp_path / "exported")  # sha256 manifest checked
    assert exported.output_size == 128 and json.loads((tmp_path / "exported" / "prior.json").read_text())["trained"]["steps_done"] == 120
    again = exported.sample("a red cube", eval_cameras(128)[:4], steps=2, generator=torch.Generator().manual_seed(0))
    assert again.shape == (4, 4, 128, 128) and torch.isfinite(again).all()
    with pytest.raises(UserError, match="no upsampler"):
        export_checkpoint(run, tmp_path / "bare", upsampler_from=run / "prior")  # a prior without one


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not (SHIPPED_AE / "config.json").is_file(), reason="shipped autoencoder absent")
def test_two_node_torchrun_launch_on_one_machine(tmp_path):
    """docs/scale-out.md's two-node command, both node ranks on 127.0.0.1: they meet, train together, and
    rank 0 alone writes the finished run folder."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    port = str(_free_port())
    command = [torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
               "--master_port", port, "-m", "gen3d", "train", "configs/ci/train-smoke.yaml",
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "multiview.optim.steps=20",
               "--set", "multiview.optim.checkpoint_every=10", "--set", "multiview.optim.log_every=5",
               "--out", str(tmp_path / "run"), "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(command[:3] + ["--node_rank", str(rank)] + command[3:], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=400)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["metrics"]["steps"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]


def test_a_model_with_further_set_attention_starts_as_the_model_it_is_initialised_from(tmp_path):
    from gen3d.models.multiview import MultiViewDenoiser, MVConfig
    from gen3d.training.pipeline import initialise_from

    torch.manual_seed(0)
    small = dict(channels=(16, 32, 32), heads=2, emb_dim=32, groups=4)
    source = MultiViewDenoiser(MVConfig(**small))
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.05)  # zero-initialised output layers too: every layer matters
    source.save_pretrained(tmp_path / "mv")
    wider = MultiViewDenoiser(MVConfig(**small, attention_from_level=0))
    initialise_from(wider, tmp_path / "mv")
    assert wider.down[0].attn is not None and source.down[0].attn is None
    n, k = 4, 1
    cond = dict(views=n, plucker=torch.randn(n, 6, 16, 16), obs_latents=torch.randn(n, k, 4, 16, 16),
                obs_mask=torch.ones(n, k), obs_plucker=torch.randn(n, k, 6, 16, 16), text_tokens=torch.randn(n, 5, 384),
                text_mask=torch.ones(n, 5, dtype=torch.bool), text_pooled=torch.randn(n, 384))
    x, t = torch.randn(n, 4, 16, 16), torch.full((n,), 500)
    assert torch.allclose(wider(x, t, **cond), source(x, t, **cond), atol=1e-6)  # new attention adds zero
    with torch.no_grad():
        wider.down[0].attn.out_self.weight.normal_(0, 0.05)
    assert (wider(x, t, **cond) - source(x, t, **cond)).abs().max() > 1e-4  # ... until it is trained
    narrower = MultiViewDenoiser(MVConfig(**{**small, "channels": (16, 32, 48)}))
    with pytest.raises(UserError, match="do not match"):
        initialise_from(narrower, tmp_path / "mv")
