"""The hostile corpus of the command line (issue 16): every command and every class of option fed
broken, absurd or malicious input, in process and without training.

Each case says the exit code it expects and a piece of the message (the file or key it must
name). Every case checks the contract of docs/CONVENTIONS.md: never exit 1, never a traceback, a
refusal is exit 2 with one line on stderr, and nothing is written: the folder holding every
fixture, the working directory and `$GEN3D_RUNS` are the same before and after.
"""

from __future__ import annotations

import fcntl
import os
import shlex
from pathlib import Path

import pytest
from hostile_fixtures import CI, RANDOM_PT_FILES, ROOT, build

from gen3d.cli import main

T3 = f"--config {CI / 'text-to-3d.yaml'}"
T4 = f"--config {CI / 'text-to-4d.yaml'}"
I3 = f"--config {CI / 'image-to-3d.yaml'}"
RC = f"--config {CI / 'reconstruct.yaml'}"
SPHERE = "'a red sphere'"
SCENE = "{T}/scenes/ok"
PHOTO = "{T}/img/photo.png"
MISSING_ARG = "Missing argument"

# (name, arguments ({T}: the fixture folder), exit code, text the output must hold)
CASES: list[tuple[str, str, int, str]] = [
    # usage: click's errors, one line naming the option
    ("no-such-command", "nosuchcmd", 2, "No such command 'nosuchcmd'"),
    ("unknown-global-option", "--bogus", 2, "--bogus"),
    ("text-missing-prompt", "text-to-3d --dry-run", 2, MISSING_ARG),
    ("text-unknown-option", f"text-to-3d {SPHERE} --bogus", 2, "--bogus"),
    ("seed-not-int", f"text-to-3d {SPHERE} --seed abc --dry-run", 2, "--seed"),
    ("seed-negative", f"text-to-3d {SPHERE} --seed -1 --dry-run", 2, "--seed"),
    ("seed-too-large", f"text-to-3d {SPHERE} --seed 2147483648 --dry-run", 2, "--seed"),
    ("seed-huge", f"text-to-3d {SPHERE} --seed 99999999999999999999999 --dry-run", 2, "--seed"),
    ("seed-float", f"text-to-3d {SPHERE} --seed 1.5 --dry-run", 2, "--seed"),
    ("seed-max-ok", f"text-to-3d {SPHERE} {T3} --seed 2147483647 --dry-run", 0, "seed 2147483647"),
    ("steps-not-int", f"reconstruct {SCENE} --steps abc --dry-run", 2, "--steps"),
    ("frames-not-int", "text-to-4d 'a sphere bouncing' --frames x --dry-run", 2, "--frames"),
    ("elevation-not-number", f"image-to-3d {PHOTO} --elevation up --dry-run", 2, "--elevation"),
    ("export-missing-run", "export", 2, MISSING_ARG),
    ("export-resolution-not-int", "export {T}/runs-in/done --resolution big", 2, "--resolution"),
    ("image-4d-missing-prompt", f"image-to-4d {PHOTO} --dry-run", 2, "--prompt"),
    ("convert-missing-from", "convert {T}/w/tiny.safetensors --out {T}/new", 2, "--from"),
    ("batch-jobs-negative", "batch {T}/jobs/exp.yaml --jobs -1 --dry-run", 2, "--jobs"),
    ("demo-steps-zero", "demo --train-steps 0 --out {T}/new.png", 2, "--train-steps"),
    ("serve-port-not-int", "serve --port abc", 2, "--port"),
    ("bench-missing-name", "bench", 2, MISSING_ARG),
    # config files
    ("config-binary", f"text-to-3d {SPHERE} --config {{T}}/cfg/bin.yaml --dry-run", 2, "bin.yaml: not a text file"),
    ("config-utf16", f"text-to-3d {SPHERE} --config {{T}}/cfg/utf16.yaml --dry-run", 2, "utf16.yaml: not a text file"),
    ("config-nul", f"text-to-3d {SPHERE} --config {{T}}/cfg/nul.yaml --dry-run", 2, "nul.yaml"),
    ("config-folder", f"text-to-3d {SPHERE} --config {{T}}/cfg/folder --dry-run", 2, "folder: is a folder"),
    ("config-missing", f"text-to-3d {SPHERE} --config {{T}}/cfg/none.yaml --dry-run", 2, "none.yaml"),
    ("config-symlink-loop", f"text-to-3d {SPHERE} --config {{T}}/loop --dry-run", 2, "loop"),
    ("config-dangling", f"text-to-3d {SPHERE} --config {{T}}/dangling --dry-run", 2, "dangling"),
    ("config-empty-ok", f"text-to-3d {SPHERE} --config {{T}}/cfg/empty.yaml --dry-run", 0, "plan: text-to-3d"),
    ("config-list", f"text-to-3d {SPHERE} --config {{T}}/cfg/list.yaml --dry-run", 2, "expected a mapping"),
    ("config-bad-yaml", f"text-to-3d {SPHERE} --config {{T}}/cfg/bad.yaml --dry-run", 2, "bad.yaml line"),
    ("config-nan", f"text-to-3d {SPHERE} --config {{T}}/cfg/nan.yaml --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("config-inf", f"text-to-3d {SPHERE} --config {{T}}/cfg/inf.yaml --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("config-1e999", f"text-to-3d {SPHERE} --config {{T}}/cfg/huge.yaml --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("config-ninf-int", f"text-to-3d {SPHERE} --config {{T}}/cfg/ninf.yaml --dry-run", 2, "'render_size'"),
    ("config-nan-int", f"text-to-3d {SPHERE} --config {{T}}/cfg/intnan.yaml --dry-run", 2, "'recon.steps'"),
    ("config-nan-in-list", f"text-to-3d {SPHERE} --config {{T}}/cfg/betas.yaml --dry-run", 2, "'recon.optim.betas[1]'"),
    ("config-exponents-ok", f"text-to-3d {SPHERE} --config {{T}}/cfg/exp.yaml --dry-run", 0, "lr: 0.001"),
    ("config-unknown-key", f"text-to-3d {SPHERE} --config {{T}}/cfg/unknown.yaml --dry-run", 2, "'recon.stepz'"),
    ("config-not-mapping", f"text-to-3d {SPHERE} --config {{T}}/cfg/mapping.yaml --dry-run", 2, "'recon' must be a mapping"),
    ("config-not-list", f"text-to-3d {SPHERE} --config {{T}}/cfg/formats.yaml --dry-run", 2, "'export.formats' must be a list"),
    ("config-half-step", f"text-to-3d {SPHERE} --config {{T}}/cfg/half.yaml --dry-run", 2, "'recon.steps' must be an integer"),
    ("config-reconstruct-binary", f"reconstruct {SCENE} --config {{T}}/cfg/bin.yaml --dry-run", 2, "bin.yaml"),
    ("config-4d-folder", "text-to-4d 'a sphere bouncing' --config {T}/cfg/folder --dry-run", 2, "is a folder"),
    # --set
    ("set-no-equals", f"text-to-3d {SPHERE} --set recon.steps --dry-run", 2, "--set expects key=value"),
    ("set-empty-key", f"text-to-3d {SPHERE} --set =5 --dry-run", 2, "--set has an empty key"),
    ("set-empty-part", f"text-to-3d {SPHERE} --set recon..steps=5 --dry-run", 2, "--set has an empty key"),
    ("set-unknown-key", f"text-to-3d {SPHERE} --set recon.stepz=5 --dry-run", 2, "'recon.stepz'"),
    ("set-steps-zero", f"text-to-3d {SPHERE} --set recon.steps=0 --dry-run", 2, "'recon.steps'"),
    ("set-steps-negative", f"text-to-3d {SPHERE} --set recon.steps=-5 --dry-run", 2, "'recon.steps'"),
    ("set-steps-absurd", f"text-to-3d {SPHERE} --set recon.steps=100000000000 --dry-run", 2, "'recon.steps'"),
    ("set-steps-exponent-ok", f"text-to-3d {SPHERE} {T3} --set recon.steps=1e2 --dry-run", 0, "steps: 100"),
    ("set-steps-text", f"text-to-3d {SPHERE} --set recon.steps=many --dry-run", 2, "'recon.steps' must be an integer"),
    ("set-render-size-zero", f"text-to-3d {SPHERE} --set render_size=0 --dry-run", 2, "'render_size'"),
    ("set-render-size-absurd", f"text-to-3d {SPHERE} --set render_size=100000 --dry-run", 2, "'render_size'"),
    ("set-view-steps-zero", f"text-to-3d {SPHERE} --set views.steps=0 --dry-run", 2, "'views.steps'"),
    ("set-passes-zero", f"text-to-3d {SPHERE} --set views.passes=[0] --dry-run", 2, "'views.passes'"),
    ("set-distill-steps-zero", f"text-to-3d {SPHERE} --method sds --set distill.steps=0 --dry-run", 2, "'distill.steps'"),
    ("set-batch-rays-zero", f"text-to-3d {SPHERE} --set recon.batch_rays=0 --dry-run", 2, "'recon.batch_rays'"),
    ("set-batch-rays-absurd", f"text-to-3d {SPHERE} --set recon.batch_rays=1e12 --dry-run", 2, "'recon.batch_rays'"),
    ("set-threads-negative", f"text-to-3d {SPHERE} --set recon.threads=-1 --dry-run", 2, "'recon.threads'"),
    ("set-checkpoint-every-zero", f"text-to-3d {SPHERE} --set fit.checkpoint_every=0 --dry-run", 2, "'fit.checkpoint_every'"),
    ("set-lr-nan", f"text-to-3d {SPHERE} --set recon.optim.lr=.nan --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("set-lr-inf", f"text-to-3d {SPHERE} --set recon.optim.lr=.inf --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("set-lr-1e999", f"text-to-3d {SPHERE} --set recon.optim.lr=1e999 --dry-run", 2, "'recon.optim.lr' must be a finite"),
    ("set-lr-exponent-ok", f"text-to-3d {SPHERE} {T3} --set recon.optim.lr=1e-3 --dry-run", 0, "lr: 0.001"),
    ("set-lr-1e308-ok", f"text-to-3d {SPHERE} {T3} --set recon.optim.lr=1e308 --dry-run", 0, "lr: 1.0e+308"),
    ("set-lr-negative", f"text-to-3d {SPHERE} --set recon.optim.lr=-1e-3 --dry-run", 2, "'recon.optim.lr'"),
    ("set-lr-text", f"text-to-3d {SPHERE} --set recon.optim.lr=fast --dry-run", 2, "'recon.optim.lr' must be a number"),
    ("set-betas-inf", f"text-to-3d {SPHERE} --set recon.optim.betas=[0.9,.inf] --dry-run", 2, "'recon.optim.betas[1]'"),
    ("set-null-section", f"text-to-3d {SPHERE} --set recon=null --dry-run", 2, "'recon' must not be null"),
    ("set-null-int", f"text-to-3d {SPHERE} --set recon.steps=null --dry-run", 2, "'recon.steps' must not be null"),
    ("set-null-list", f"text-to-3d {SPHERE} --set views.passes=null --dry-run", 2, "'views.passes' must not be null"),
    ("set-null-string", f"text-to-3d {SPHERE} --set device=null --dry-run", 2, "'device' must not be null"),
    ("set-null-optional-ok", f"text-to-3d {SPHERE} {T3} --set model_path=null --dry-run", 0, "model_path: null"),
    ("set-4d-null-grid", "text-to-4d 'a sphere bouncing' --set grid=null --dry-run", 2, "'grid' must not be null"),
    ("set-recon-null-data", f"reconstruct {SCENE} --set data=null --dry-run", 2, "'data' must not be null"),
    ("set-recon-size-one-number", f"reconstruct {SCENE} --set data.size=[8] --dry-run", 2,
     "'data.size' must list 2 numbers"),
    ("set-betas-three", f"text-to-3d {SPHERE} --set recon.optim.betas=[0.9,0.99,0.5] --dry-run", 2,
     "'recon.optim.betas' must list 2 numbers"),
    ("set-export-resolution-one", f"text-to-3d {SPHERE} --set export.resolution=1 --dry-run", 2, "'export.resolution'"),
    ("set-export-resolution-memory", f"text-to-3d {SPHERE} --set export.resolution=100000 --dry-run", 2,
     "'export.resolution' = 100000: a 100000^3 marching-cubes grid needs about"),
    ("set-export-formats-empty", f"text-to-3d {SPHERE} --set export.formats=[] --dry-run", 2, "'export.formats' is empty"),
    ("set-export-formats-stl", f"text-to-3d {SPHERE} --set export.formats=[stl] --dry-run", 2, "'export.formats[0]'"),
    ("set-export-threshold-zero", f"text-to-3d {SPHERE} --set export.threshold=0 --dry-run", 2, "'export.threshold'"),
    ("set-export-threshold-negative", f"text-to-3d {SPHERE} --set export.threshold=-1 --dry-run", 2, "'export.threshold'"),
    ("set-texture-size-absurd", f"text-to-3d {SPHERE} --set export.texture_size=100000 --dry-run", 2, "'export.texture_size'"),
    ("set-turntable-frames-zero", f"text-to-3d {SPHERE} --set export.turntable_frames=0 --dry-run", 2, "'export.turntable_frames'"),
    ("set-turntable-size-zero", f"text-to-3d {SPHERE} --set export.turntable_size=0 --dry-run", 2, "'export.turntable_size'"),
    ("set-pointcloud-zero", f"text-to-3d {SPHERE} --set export.pointcloud_points=0 --dry-run", 2, "'export.pointcloud_points'"),
    ("set-target-faces-zero", f"text-to-3d {SPHERE} --set export.target_faces=0 --dry-run", 2, "'export.target_faces'"),
    ("set-device-unknown", f"text-to-3d {SPHERE} --device tpu --dry-run", 2, "'device'"),
    ("set-precision-unknown", f"text-to-3d {SPHERE} --precision fp8 --dry-run", 2, "'precision'"),
    ("set-precision-fp16-cpu", f"text-to-3d {SPHERE} --device cpu --precision fp16 --dry-run", 2, "'precision'"),
    ("set-method-unknown", f"text-to-3d {SPHERE} --method nope --dry-run", 2, "'method'"),
    ("set-bool-text", f"text-to-3d {SPHERE} --set export.texture=maybe --dry-run", 2, "'export.texture'"),
    ("set-4d-frames-one", "text-to-4d 'a sphere bouncing' --frames 1 --dry-run", 2, "'grid.frames'"),
    ("set-4d-frames-zero", "text-to-4d 'a sphere bouncing' --frames 0 --dry-run", 2, "'grid.frames'"),
    ("set-4d-frames-absurd", "text-to-4d 'a sphere bouncing' --frames 100000 --dry-run", 2, "'grid.frames'"),
    ("set-4d-cameras", "text-to-4d 'a sphere bouncing' --set grid.cameras=9 --dry-run", 2, "'grid.cameras'"),
    ("set-4d-eval-frames-zero", "text-to-4d 'a sphere bouncing' --set eval_frames=0 --dry-run", 2, "'eval_frames'"),
    ("set-4d-exponent-ok", f"text-to-4d 'a sphere bouncing' {T4} --set recon.optim.lr=5e-3 --dry-run", 0, "lr: 0.005"),
    ("set-image-elevation-nan", f"image-to-3d {PHOTO} --elevation nan --dry-run", 2, "'elevation'"),
    ("set-image-elevation-inf", f"image-to-3d {PHOTO} --elevation inf --dry-run", 2, "'elevation'"),
    ("set-recon-views-zero", f"reconstruct {SCENE} --views 0 --dry-run", 2, "'data.views'"),
    ("set-recon-views-negative", f"reconstruct {SCENE} --views -3 --dry-run", 2, "'data.views'"),
    ("set-recon-steps-zero", f"reconstruct {SCENE} --steps 0 --dry-run", 2, "'recon.steps'"),
    ("set-recon-steps-absurd", f"reconstruct {SCENE} --steps 10000000000 --dry-run", 2, "'recon.steps'"),
    ("set-recon-size-zero", f"reconstruct {SCENE} --set data.size=[0,8] --dry-run", 2, "'data.size'"),
    ("set-recon-size-absurd", f"reconstruct {SCENE} --set data.size=[100000,8] --dry-run", 2, "'data.size'"),
    ("set-recon-downscale-zero", f"reconstruct {SCENE} --set data.downscale=0 --dry-run", 2, "'data.downscale'"),
    ("set-recon-background", f"reconstruct {SCENE} --set data.background=[2,0,0] --dry-run", 2, "'data.background'"),
    ("set-recon-eval-every-zero", f"reconstruct {SCENE} --set train.eval_every=0 --dry-run", 2, "'train.eval_every'"),
    ("set-recon-exponent-ok", f"reconstruct {SCENE} {RC} --set recon.optim.lr=1E-2 --dry-run", 0, "lr: 0.01"),
    # priors and model folders
    ("prior-unknown", f"text-to-3d {SPHERE} --prior nope --dry-run", 2, "unknown prior 'nope'"),
    ("prior-unknown-run", f"text-to-3d {SPHERE} --prior nope --out {{T}}/new", 2, "unknown prior 'nope'"),
    ("prior-4d-unknown", "text-to-4d 'a sphere bouncing' --prior nope --dry-run", 2, "unknown prior 'nope'"),
    ("prior-image-unknown", f"image-to-3d {PHOTO} --prior nope --dry-run", 2, "unknown prior 'nope'"),
    ("prior-image-4d-unknown", f"image-to-4d {PHOTO} --prompt 'a sphere bouncing' --prior nope --dry-run", 2,
     "unknown prior 'nope'"),
    ("prior-reconstruct-unknown", f"reconstruct {SCENE} --prior nope --dry-run", 2, "unknown prior 'nope'"),
    ("prior-reconstruct-unknown-run", f"reconstruct {SCENE} --prior nope --out {{T}}/new", 2, "unknown prior 'nope'"),
    ("prior-mode-without-prior", f"reconstruct {SCENE} --prior-mode cat3d --dry-run", 2, "--prior-mode needs --prior"),
    ("prior-mode-unknown", f"reconstruct {SCENE} --prior shapeworld-mv --prior-mode nope --dry-run", 2, "'prior.mode'"),
    ("prior-real-no-folder", f"text-to-3d {SPHERE} --prior sd --dry-run", 2, "--prior sd needs --model-path"),
    ("model-path-missing", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/models/none --dry-run", 2,
     "no such model folder"),
    ("model-path-file", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/afile --dry-run", 2, "no such model folder"),
    ("model-path-loop", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/loop --dry-run", 2, "loop"),
    ("model-path-empty", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/models/empty --dry-run", 2,
     "unet/config.json: missing"),
    ("model-path-random-weights", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/models/rand --out {{T}}/new", 2,
     "diffusion_pytorch_model.safetensors: not a readable .safetensors file"),
    ("model-path-no-weights", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/models/noweights --dry-run", 2,
     "no weights"),
    ("model-path-binary-json", f"text-to-3d {SPHERE} --prior sd --model-path {{T}}/models/badjson --dry-run", 2,
     "config.json: not a readable JSON"),
    ("model-path-mvdream-empty", f"text-to-3d {SPHERE} --prior mvdream --model-path {{T}}/models/empty --dry-run", 2,
     "unet/config.json"),
    ("model-path-bundled-empty", f"text-to-3d {SPHERE} --model-path {{T}}/models/empty --dry-run", 2,
     "manifest.json: missing; not a bundled prior folder"),
    ("model-path-bundled-modified", f"text-to-3d {SPHERE} --model-path {{T}}/models/swmodified --out {{T}}/new", 2,
     "sha256 does not match"),
    ("model-path-4d-empty", "text-to-4d 'a sphere bouncing' --model-path {T}/models/swnomanifest --dry-run", 2,
     "manifest.json: missing"),
    ("model-path-fewview", f"reconstruct {SCENE} --prior zero123 --dry-run", 2, "--prior zero123 needs --model-path"),
    # prompts and input files
    ("prompt-empty", "text-to-3d '' --dry-run", 2, "the prompt is empty"),
    ("prompt-blank", "text-to-3d '   ' --dry-run", 2, "the prompt is empty"),
    ("prompt-4d-empty", "text-to-4d '' --dry-run", 2, "the prompt is empty"),
    ("prompt-unknown-shape-warns", f"text-to-3d 'a cat' {T3} --dry-run", 0, "knows only the ShapeWorld shapes"),
    ("prompt-4d-unknown-shape-warns", f"text-to-4d 'a dog running' {T4} --dry-run", 0, "--prior sd/zero123/mvdream"),
    ("prompt-control-chars-ok", f"text-to-3d $'a red sphere\\x1b[2J' {T3} --dry-run", 0, "plan: text-to-3d"),
    ("image-missing", "image-to-3d {T}/img/none.png --dry-run", 2, "none.png"),
    ("image-folder", "image-to-3d {T}/img/folder.png --dry-run", 2, "folder.png"),
    ("image-symlink-loop", "image-to-3d {T}/loop --dry-run", 2, "loop: --image is a symlink loop"),
    ("image-dangling", "image-to-3d {T}/dangling --dry-run", 2, "nowhere: image file not found"),
    ("image-text", "image-to-3d {T}/img/text.png --dry-run", 2, "text.png"),
    ("image-empty", "image-to-3d {T}/img/empty.png --dry-run", 2, "empty.png"),
    ("image-truncated", "image-to-3d {T}/img/trunc.png --out {T}/new", 2, "trunc.png"),
    ("image-binary-config", f"image-to-3d {PHOTO} --config {{T}}/cfg/bin.yaml --dry-run", 2, "bin.yaml"),
    ("image-mask-missing", f"image-to-3d {PHOTO} --mask {{T}}/img/none.png --dry-run", 2, "none.png"),
    ("image-mask-loop", f"image-to-3d {PHOTO} --mask {{T}}/loop --dry-run", 2, "loop: --mask is a symlink loop"),
    ("image-ok", f"image-to-3d {PHOTO} {I3} --dry-run", 0, "plan: image-to-3d"),
    ("image-4d-empty-caption", f"image-to-4d {PHOTO} --prompt '' --dry-run", 2, "the caption is empty"),
    ("image-4d-missing", "image-to-4d {T}/img/none.png --prompt 'a sphere bouncing' --dry-run", 2, "none.png"),
    ("image-4d-loop", "image-to-4d {T}/loop --prompt 'a sphere bouncing' --dry-run", 2, "symlink loop"),
    # scenes
    ("scene-missing", "reconstruct {T}/scenes/none --dry-run", 2, "none: scene folder not found"),
    ("scene-empty-folder", "reconstruct {T}/scenes/empty --dry-run", 2, "not a scene folder"),
    ("scene-a-file", "reconstruct {T}/afile --dry-run", 2, "afile"),
    ("scene-loop", "reconstruct {T}/loop --dry-run", 2, "loop"),
    ("scene-bad-json", "reconstruct {T}/scenes/badjson --dry-run", 2, "transforms.json: not valid JSON"),
    ("scene-binary-json", "reconstruct {T}/scenes/binary --dry-run", 2, "transforms.json: cannot read"),
    ("scene-no-frames", "reconstruct {T}/scenes/noframes --dry-run", 2, "'frames' must be a non-empty list"),
    ("scene-nan-pose", "reconstruct {T}/scenes/nanpose --dry-run", 2, "NaN or infinity"),
    ("scene-no-focal", "reconstruct {T}/scenes/nofocal --dry-run", 2, "no focal length"),
    ("scene-missing-image", "reconstruct {T}/scenes/missingimage --dry-run", 2, "image file not found"),
    ("scene-llff-random", "reconstruct {T}/scenes/llff --dry-run", 2, "poses_bounds.npy"),
    ("scene-outside-dotdot", "reconstruct {T}/scenes/dotdot --dry-run", 2, "resolves outside the scene folder"),
    ("scene-outside-absolute", "reconstruct {T}/scenes/absolute --out {T}/new", 2, "data.allow_outside_scene=true"),
    ("scene-outside-symlink", "reconstruct {T}/scenes/symlinked --dry-run", 2, "resolves outside the scene folder"),
    ("scene-outside-allowed", f"reconstruct {{T}}/scenes/dotdot {RC} --set data.allow_outside_scene=true --dry-run", 0,
     "allow_outside_scene: true"),
    ("scene-too-many-views", f"reconstruct {SCENE} --views 99 --out {{T}}/new", 2, "asked for 99 views"),
    ("scene-fewview-too-many-views", f"reconstruct {SCENE} --prior shapeworld-mv --views 99 --dry-run", 2,
     "asked for 99 views"),
    ("scene-ok", f"reconstruct {SCENE} {RC} --dry-run", 0, "plan: reconstruct"),
    # output folders
    ("out-is-file", f"text-to-3d {SPHERE} {T3} --out {{T}}/afile", 2, "afile: --out is a file"),
    ("out-under-file", f"text-to-3d {SPHERE} {T3} --out {{T}}/afile/sub", 2, "lies under the file"),
    ("out-loop", f"text-to-3d {SPHERE} {T3} --out {{T}}/loop", 2, "symlink loop"),
    ("out-existing-run", f"text-to-3d {SPHERE} {T3} --out {{T}}/runs-in/done", 2, "already a run folder"),
    ("out-reconstruct-file", f"reconstruct {SCENE} {RC} --out {{T}}/afile", 2, "--out is a file"),
    ("out-4d-under-file", f"text-to-4d 'a sphere bouncing' {T4} --out {{T}}/afile/x", 2, "lies under the file"),
    ("out-image-file", f"image-to-3d {PHOTO} {I3} --out {{T}}/afile", 2, "--out is a file"),
    ("runs-env-is-file", f"text-to-3d {SPHERE} {T3} ENV:GEN3D_RUNS={{T}}/afile", 2, "($GEN3D_RUNS) is a file"),
    ("runs-env-under-file", f"reconstruct {SCENE} {RC} ENV:GEN3D_RUNS={{T}}/afile/runs", 2, "lies under the file"),
    # resume
    ("resume-missing", "resume {T}/runs-in/none", 2, "manifest.json: not found"),
    ("resume-file", "resume {T}/afile", 2, "not found"),
    ("resume-no-manifest", "resume {T}/runs-in/nomanifest", 2, "manifest.json: not found"),
    ("resume-manifest-dir", "resume {T}/runs-in/manifestdir", 2, "manifest.json"),
    ("resume-not-json", "resume {T}/runs-in/notjson", 2, "manifest.json: not valid JSON"),
    ("resume-binary", "resume {T}/runs-in/binary", 2, "manifest.json: not valid JSON"),
    ("resume-list", "resume {T}/runs-in/list", 2, "unsupported manifest"),
    ("resume-schema", "resume {T}/runs-in/schema2", 2, "schema_version must be 1"),
    ("resume-no-kind", "resume {T}/runs-in/nokind", 2, "field 'kind' is missing"),
    ("resume-seed-type", "resume {T}/runs-in/seedstr", 2, "field 'seed' must be an integer"),
    ("resume-stages-type", "resume {T}/runs-in/stagesdict", 2, "field 'stages' must be a list"),
    ("resume-stage-name", "resume {T}/runs-in/stagenoname", 2, "stages[0]: field 'name' is missing"),
    ("resume-status", "resume {T}/runs-in/badstatus", 2, "field 'status' must be one of"),
    ("resume-artifacts", "resume {T}/runs-in/artifacts", 2, "field 'artifacts'"),
    ("resume-unknown-kind", "resume {T}/runs-in/unknownkind", 2, "manifest.json: unknown job kind 'nope'"),
    ("resume-bad-config", "resume {T}/runs-in/badconfig", 2, "manifest.json: unknown config key 'bogus'"),
    ("resume-no-prompt", "resume {T}/runs-in/noprompt", 2, "manifest.json: the prompt is empty"),
    ("resume-bad-prior", "resume {T}/runs-in/badprior", 2, "unknown prior 'nope'"),
    ("resume-done", "resume {T}/runs-in/done", 2, "already done"),
    ("resume-truncated-checkpoint", "resume {T}/runs-in/truncckpt", 2, "fit.pt: unreadable checkpoint"),
    ("resume-random-checkpoint", "resume {T}/runs-in/randckpt", 2, "fit.pt: unreadable checkpoint"),
    ("resume-locked", "resume {T}/runs-in/locked", 2, "another gen3d process is running this run"),
    # export
    ("export-format", "export {T}/runs-in/done --format stl", 2, "--format must be glb, ply or obj"),
    ("export-resolution-memory", "export {T}/runs-in/done --resolution 100000", 2,
     "--resolution = 100000: a 100000^3 marching-cubes grid needs about"),
    ("export-resolution-zero", "export {T}/runs-in/done --resolution 0", 2, "--resolution must be"),
    ("export-resolution-negative", "export {T}/runs-in/done --resolution -8", 2, "--resolution must be"),
    ("export-missing", "export {T}/runs-in/none", 2, "manifest.json: not found"),
    ("export-not-json", "export {T}/runs-in/notjson", 2, "not valid JSON"),
    ("export-seed-type", "export {T}/runs-in/seedstr", 2, "field 'seed'"),
    ("export-unknown-kind", "export {T}/runs-in/unknownkind", 2, "unknown job kind 'nope'"),
    ("export-no-mesh-kind", "export {T}/runs-in/selftest", 2, "'selftest' runs have no mesh to export"),
    ("export-unfinished", "export {T}/runs-in/done --format ply", 2, "views.json: missing"),
    ("export-truncated-checkpoint", "export {T}/runs-in/truncckpt", 2, "fit.pt: unreadable checkpoint"),
    ("export-locked", "export {T}/runs-in/locked", 2, "another gen3d process"),
    # runs
    ("runs-root-file", "runs --root {T}/afile", 2, "afile: not a runs folder"),
    ("runs-root-missing-ok", "runs --root {T}/none", 0, "no runs in"),
    ("runs-broken-manifests-ok", "runs --root {T}/runs-in", 0, "unreadable"),
    ("runs-escapes-prompts", "runs --root {T}/runs-in", 0, "\\x1b[2J"),
    # convert
    ("convert-random", "convert {T}/w/rand.safetensors --from sd --out {T}/new", 2,
     "rand.safetensors: not a readable .safetensors file"),
    ("convert-truncated", "convert {T}/w/trunc.safetensors --from sd --out {T}/new", 2,
     "trunc.safetensors: truncated .safetensors file"),
    ("convert-empty", "convert {T}/w/empty.safetensors --from sd --out {T}/new", 2, "empty.safetensors"),
    ("convert-missing", "convert {T}/w/none.safetensors --from sd --out {T}/new", 2, "none.safetensors"),
    ("convert-folder", "convert {T}/dir --from sd --out {T}/new", 2, "dir"),
    ("convert-random-ckpt", "convert {T}/w/rand.ckpt --from sd --out {T}/new", 2, "rand.ckpt"),
    *[(f"convert-random-pt-{k}", f"convert {{T}}/w/rand{k}.pt --from zero123 --out {{T}}/new", 2,
       f"rand{k}.pt: ") for k in range(RANDOM_PT_FILES)],
    ("convert-unknown-kind", "convert {T}/w/tiny.safetensors --from nope --out {T}/new", 2, "nope"),
    ("convert-foreign-tensors", "convert {T}/w/tiny.safetensors --from sd --out {T}/new", 2, "tiny.safetensors"),
    ("convert-out-exists", "convert {T}/w/tiny.safetensors --from sd --out {T}/dir", 2, "already exists"),
    ("convert-out-under-file", "convert {T}/w/tiny.safetensors --from sd --out {T}/afile/x", 2, "lies under the file"),
    ("convert-prediction", "convert {T}/w/tiny.safetensors --from sd --out {T}/new --prediction x0", 2, "--prediction"),
    # batch
    ("batch-missing", "batch {T}/jobs/none.yaml --dry-run", 2, "none.yaml"),
    ("batch-folder", "batch {T}/jobs/folder.yaml --dry-run", 2, "folder.yaml"),
    ("batch-binary", "batch {T}/jobs/bin.txt --dry-run", 2, "bin.txt"),
    ("batch-empty", "batch {T}/jobs/empty.txt --dry-run", 2, "empty.txt: no jobs"),
    ("batch-bad-yaml", "batch {T}/jobs/bad.yaml --dry-run", 2, "bad.yaml"),
    ("batch-unknown-kind", "batch {T}/jobs/unknownkind.yaml --dry-run", 2, "nope"),
    ("batch-seed", "batch {T}/jobs/seed.yaml --dry-run", 2, "'seed' must be an integer in [0, 2147483647]"),
    ("batch-steps", "batch {T}/jobs/steps.yaml --dry-run", 2, "'recon.steps'"),
    ("batch-prior", "batch {T}/jobs/prior.yaml --dry-run", 2, "unknown prior 'nope'"),
    ("batch-empty-prompt", "batch {T}/jobs/emptyprompt.jsonl --dry-run", 2, "the prompt is empty"),
    ("batch-exponent-ok", "batch {T}/jobs/exp.yaml --dry-run", 0, "recon.optim.lr=1e-3"),
    ("batch-backend", "batch {T}/jobs/exp.yaml --backend slurm", 2, "--backend must be local or ray"),
    ("batch-out-file", "batch {T}/jobs/exp.yaml --out {T}/afile", 2, "--out is a file"),
    ("batch-seed-option", "batch {T}/jobs/exp.yaml --seed -4 --dry-run", 2, "--seed"),
    ("batch-binary-config", "batch {T}/jobs/exp.yaml --config {T}/cfg/bin.yaml --dry-run", 2, "bin.yaml"),
    # train
    ("train-missing-config", "train {T}/cfg/none.yaml --dry-run", 2, "none.yaml"),
    ("train-binary-config", "train {T}/cfg/bin.yaml --dry-run", 2, "bin.yaml: not a text file"),
    ("train-folder-config", "train {T}/cfg/folder --dry-run", 2, "is a folder"),
    ("train-unknown-key", f"train {CI / 'train-smoke.yaml'} --set bogus=1 --dry-run", 2, "unknown config key 'bogus'"),
    ("train-steps-zero", f"train {CI / 'train-smoke.yaml'} --set autoencoder.optim.steps=0 --dry-run", 2,
     "'autoencoder.optim.steps'"),
    ("train-lr-nan", f"train {CI / 'train-smoke.yaml'} --set autoencoder.optim.lr=.nan --dry-run", 2,
     "'autoencoder.optim.lr' must be a finite"),
    ("train-resume-without-out", f"train {CI / 'train-smoke.yaml'} --resume", 2, "--resume needs --out"),
    ("train-out-file", f"train {CI / 'train-smoke.yaml'} --out {{T}}/afile", 2, "--out is a file"),
    ("train-seed", f"train {CI / 'train-smoke.yaml'} --seed -2 --dry-run", 2, "--seed"),
    # bench and demo
    ("bench-unknown", "bench nope", 2, "unknown benchmark 'nope'"),
    ("bench-json-under-file", "bench samplers --json {T}/afile/x.json", 2, "--json lies under the file"),
    ("bench-json-folder", "bench samplers --json {T}/dir", 2, "--json is a folder"),
    ("demo-out-under-file", "demo --out {T}/afile/x.png", 2, "--out lies under the file"),
    ("demo-out-folder", "demo --out {T}/dir", 2, "--out is a folder"),
    ("demo-seed", "demo --seed -1 --out {T}/new.png", 2, "--seed"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The fixture folder, with the run `runs-in/locked` held by another open description of it
    (as a second process running it would)."""
    root = tmp_path_factory.mktemp("hostile")
    build(root)
    fd = os.open(root / "runs-in" / "locked", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield root
    os.close(fd)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder` (symlinks not followed) with its type, size and modification time."""
    found = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(os.path.join(base, name))
            found[os.path.relpath(os.path.join(base, name), folder)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def _argv(command: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments (`$'...'` quoting for control characters) and the `ENV:NAME=value` settings."""
    args, env = [], {}
    for word in shlex.split(command.replace("{T}", str(root)).replace("$'", "'$")):
        if word.startswith("$"):
            word = word[1:].encode().decode("unicode_escape")
        if word.startswith("ENV:"):
            name, value = word[4:].split("=", 1)
            env[name] = value
        else:
            args.append(word)
    return args, env


@pytest.mark.parametrize("name, command, code, needle", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(corpus, tmp_path, monkeypatch, capsys, name, command, code, needle):
    args, env = _argv(command, corpus)
    runs = tmp_path / "runs"
    monkeypatch.setenv("GEN3D_RUNS", str(runs))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = snapshot(corpus)

    got = main(args)
    out, err = capsys.readouterr()

    assert "Traceback" not in out + err and "internal error" not in err, err
    assert "\x1b" not in out + err, "a control character reached the terminal"
    assert got == code, f"exit {got}, expected {code}:\n{err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in out + err, f"{needle!r} not in:\n{err or out}"
    assert snapshot(corpus) == before, "a fixture was written or changed"
    assert not runs.exists() and not any((tmp_path / "cwd").iterdir()), "a refusal or dry run wrote files"


def test_the_corpus_covers_every_command():
    from gen3d.cli import app, register_commands

    register_commands()
    commands = {c.name for c in app.registered_commands if not c.hidden}
    covered = {shlex.split(c[1].replace("$'", "'"))[0] for c in CASES}
    assert commands - covered == set() and len(CASES) >= 150
    assert ROOT.is_dir()
