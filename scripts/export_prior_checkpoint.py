"""A shippable prior folder from a multi-view training run's latest checkpoint (its EMA weights).

    .venv/bin/python scripts/export_prior_checkpoint.py RUN_DIR OUT_DIR

`gen3d train` writes the prior folder when its last step is done; a run stopped earlier (a session
ended, a budget ran out) still holds checkpoints every `optim.checkpoint_every` steps, and their
EMA is what the finished run would have exported at that step. The step is recorded in
`prior.json` (`trained.steps_done`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gen3d.config import from_dict
from gen3d.errors import UserError
from gen3d.models.multiview import MultiViewDenoiser, MVConfig
from gen3d.models.shapeworld_prior import export_prior, load_autoencoder
from gen3d.runs.checkpoint import load_checkpoint


def main(run: Path, out: Path) -> None:
    checkpoint = load_checkpoint(run / "ckpt" / "multiview.pt")
    if checkpoint is None:
        raise UserError(f"{run / 'ckpt' / 'multiview.pt'}: missing; the run has not checkpointed its multiview stage")
    manifest = json.loads((run / "manifest.json").read_text())
    config = manifest["config"]
    net = MultiViewDenoiser(from_dict(MVConfig, config["multiview"]["model"]))
    reference = net.state_dict()
    net.load_state_dict({k: v.to(reference[k].dtype) for k, v in checkpoint.state["ema"]["shadow"].items()})
    info = {"trained": {"config": manifest["inputs"].get("config"), "seed": manifest["seed"],
                        "init_from": config["multiview"]["init_from"] or None, "scenes": config["data"]["scenes"],
                        "steps": config["multiview"]["optim"]["steps"], "steps_done": checkpoint.step}}
    export_prior(out, load_autoencoder(Path(config["multiview"]["autoencoder"])), net, info, "shapeworld-mv")
    print(f"{out}: the EMA of step {checkpoint.step}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
