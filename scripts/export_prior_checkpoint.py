"""A shippable prior folder from a multi-view training run's latest checkpoint (its EMA weights).

    .venv/bin/python scripts/export_prior_checkpoint.py RUN_DIR OUT_DIR [--upsampler-from PRIOR_DIR]

`gen3d train` writes the prior folder when its last step is done; a run stopped earlier (a session
ended, a budget ran out) still holds checkpoints every `optim.checkpoint_every` steps, and their
EMA is what the finished run would have exported at that step. The step is recorded in
`prior.json` (`trained.steps_done`). `--upsampler-from` carries a prior folder's 128 px upsampler
over unchanged: it was trained on the autoencoder's decoded views, not on the multi-view model's,
so a retrained multi-view model keeps it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gen3d.config import from_dict
from gen3d.errors import UserError
from gen3d.models.multiview import MultiViewDenoiser, MVConfig
from gen3d.models.shapeworld_prior import PRIOR_CONFIG, UPSAMPLER, export_prior, load_autoencoder, verify_folder
from gen3d.runs.checkpoint import load_checkpoint


def main(run: Path, out: Path, upsampler_from: Path | None = None) -> None:
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
    extras = {}
    if upsampler_from is not None:  # copied in as it is, with the output size and provenance it gives
        verify_folder(upsampler_from)
        if not (upsampler_from / UPSAMPLER).is_dir():
            raise UserError(f"{upsampler_from}: has no upsampler/ to carry over")
        source = json.loads((upsampler_from / PRIOR_CONFIG).read_text())
        info.update(output_size=source["output_size"], upsampler=source["upsampler"])
        extras[UPSAMPLER] = upsampler_from / UPSAMPLER
    export_prior(out, load_autoencoder(Path(config["multiview"]["autoencoder"])), net, info, "shapeworld-mv", extras)
    print(f"{out}: the EMA of step {checkpoint.step}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--upsampler-from", type=Path, default=None, help="a prior folder whose upsampler to keep")
    args = parser.parse_args()
    main(args.run, args.out, args.upsampler_from)
