"""The 4D prior's motion factorisation: ground-truth poses, rays in the object's frame, the motion head."""

from __future__ import annotations

import numpy as np
import torch

from gen3d.cameras import orbit, plucker, project
from gen3d.models.motion import (
    MotionConfig,
    MotionHead,
    object_frame_plucker,
    train_motion_head,
)
from gen3d.shapeworld.animated import AnimatedSpec, centre_at, mesh_at, pose_at
from gen3d.shapeworld.scenes import FOV_Y_DEG, RADIUS
from gen3d.shapeworld.shapes import build_mesh
from gen3d.shapeworld.spec import SceneSpec

CAMS = orbit([10.0, 30.0], [0.0, 250.0], RADIUS, FOV_Y_DEG, 24, 24)


def test_pose_maps_the_static_object_onto_the_animated_one():
    spec = SceneSpec("cube", "red", "large")
    static = np.asarray(build_mesh(spec).vertices)
    for motion, t in [("slide", 0.3), ("spin", 0.7), ("grow", 0.2), ("bounce", 0.25)]:
        x, y, z, yaw, log_scale = pose_at(motion, t)
        c, s = np.cos(yaw), np.sin(yaw)
        rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        posed = np.exp(log_scale) * static @ rotation.T + [x, y, z]
        assert np.allclose(posed, mesh_at(AnimatedSpec(spec, motion), t).vertices, atol=1e-9), motion


def test_identity_pose_gives_world_rays_and_a_moved_object_moves_its_ray_centre():
    assert torch.allclose(object_frame_plucker(CAMS, torch.zeros(2, 5)), plucker(CAMS), atol=1e-6)
    anim = AnimatedSpec(SceneSpec("sphere", "red", "large"), "slide")
    pose = torch.tensor(pose_at("slide", 1.0), dtype=torch.float32).expand(2, -1)
    moment = object_frame_plucker(CAMS, pose)[:, 3:].norm(dim=1)  # ray distance from the object's centre
    nearest = torch.stack([torch.tensor(np.unravel_index(int(m.argmin()), m.shape)[::-1]) for m in moment]).float()
    centre, _ = project(torch.tensor(centre_at(anim, 1.0), dtype=torch.float32)[None], CAMS)
    assert torch.allclose(nearest + 0.5, centre[:, 0], atol=1.0)  # pixel centres vs the projected centre


def test_motion_head_learns_poses_from_caption_and_time():
    captions = torch.eye(4, 16)  # four stand-in caption embeddings, one per motion

    def truth(index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        motions = ["slide", "bounce", "spin", "grow"]
        return torch.tensor(np.stack([pose_at(motions[i], float(x)) for i, x in zip(index, t)]), dtype=torch.float32)

    head, losses = train_motion_head(captions, truth, steps=800, generator=torch.Generator().manual_seed(0), batch=128)
    assert losses[-1] < 0.02 * losses[0]
    t = torch.linspace(0, 1, 5)
    error = (head(captions[[0] * 5], t) - truth(torch.zeros(5, dtype=torch.long), t)).abs().max()
    assert error < 0.05  # the slide's x offset spans 0.5


def test_motion_head_round_trips_through_its_folder(tmp_path):
    head = MotionHead(MotionConfig())
    head.save_pretrained(tmp_path / "motion")
    again = MotionHead.from_pretrained(tmp_path / "motion")
    x, t = torch.randn(3, 384), torch.rand(3)
    assert torch.equal(head(x, t), again(x, t))
