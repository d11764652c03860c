"""Camera effects (training.augment.CameraEffects): blur, sensor noise and a tone curve, alike on both data paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from training_helpers import tiny_config

from seg_node.training import augment as augment_module
from seg_node.training.augment import Augmentation, CameraEffects, apply_camera_effects, draw_params
from seg_node.training.checkpoint import export_checkpoint
from seg_node.training.config import TrainingConfig, TrainingError
from seg_node.training.device_augment import apply_camera_effects as apply_camera_effects_torch
from seg_node.training.lineage import earlier_stages
from seg_node.training.trainer import Trainer
from seg_node.weights import read_info


def test_recipes_without_camera_effects_draw_what_they_drew_before_the_option():
    # values the augmentation drew before camera_effects existed (seed 1, epoch 5, sample 0): runs resumed with
    # this code, and twins trained before it, repeat their crops, flips and jitter exactly
    augmentation = Augmentation((360, 360), (0.5, 2.0), True, 0.25)
    before = draw_params(np.random.default_rng([1, 5, 0]), augmentation, 360, 480)
    assert (before.scaled_size, before.top, before.left, before.flip) == ((388, 517), 10, 145, False)
    assert before.jitter == pytest.approx((-1.0246552244098859, 1.0352308884978338, 0.7763581335172006,
                                           -1.2753676132314133))
    assert before.camera is None
    with_effects = draw_params(np.random.default_rng([1, 5, 0]), dataclasses.replace(augmentation, camera_effects=1),
                               360, 480)
    assert dataclasses.replace(with_effects, camera=None) == before  # drawn after everything else
    assert with_effects.camera is not None


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_camera_effects_span_their_strength(strength):
    rng = np.random.default_rng(0)
    drawn = [CameraEffects.draw(rng, strength) for _ in range(2000)]
    blurred = [effects.blur_sigma for effects in drawn if effects.blur_sigma > 0]
    assert 0.45 < len(blurred) / len(drawn) < 0.55  # half the crops stay sharp
    assert max(blurred) <= 1.5 * strength and max(blurred) > 1.4 * strength
    noise = [effects.noise_sigma for effects in drawn]
    assert 0 <= min(noise) < 0.1 * strength and 7.9 * strength < max(noise) <= 8 * strength
    gamma = np.log([effects.gamma for effects in drawn]) / np.log(1.5)
    assert -strength <= gamma.min() < -0.98 * strength and 0.98 * strength < gamma.max() <= strength
    assert len({effects.noise_seed for effects in drawn}) == len(drawn)


def test_blur_noise_and_gamma_change_a_frame_as_a_camera_would():
    edge = np.full((64, 64, 3), 100, np.uint8)
    edge[:, 32:] = 200
    assert np.array_equal(apply_camera_effects(edge, CameraEffects(0.0, 0.0, 0, 1.0)), edge)

    blurred = apply_camera_effects(edge, CameraEffects(1.5, 0.0, 0, 1.0))
    assert 100 < blurred[10, 31, 0] < 150 < blurred[10, 32, 0] < 200  # the edge spreads over both sides
    assert blurred[10, 0, 0] == 100 and blurred[10, 63, 0] == 200  # flat areas stay

    flat = np.full((128, 128, 3), 128, np.uint8)
    noisy = apply_camera_effects(flat, CameraEffects(0.0, 8.0, 3, 1.0))
    assert abs(noisy.std() - 8.0) < 0.3 and abs(noisy.mean() - 128.0) < 0.3
    assert np.array_equal(noisy, apply_camera_effects(flat, CameraEffects(0.0, 8.0, 3, 1.0)))  # its seed's grain
    assert not np.array_equal(noisy, apply_camera_effects(flat, CameraEffects(0.0, 8.0, 4, 1.0)))

    # 255 * (128 / 255) ** gamma: a brighter and a darker tone curve
    assert apply_camera_effects(flat, CameraEffects(0.0, 0.0, 0, 1 / 1.5))[0, 0, 0] == 161
    assert apply_camera_effects(flat, CameraEffects(0.0, 0.0, 0, 1.5))[0, 0, 0] == 91


@pytest.mark.parametrize("blur_sigma, gamma", [(0.0, 1.3), (0.8, 1.0), (1.5, 1 / 1.4)])
def test_the_device_path_blurs_and_curves_as_the_cpu_path_does(camvid_root, blur_sigma, gamma):
    from seg_node.datasets import camvid

    image = camvid(camvid_root, "val.txt").read(0)[0][:96, :128]
    effects = CameraEffects(blur_sigma, 0.0, 0, gamma)
    expected = apply_camera_effects(image, effects).astype(np.float32)
    got = apply_camera_effects_torch(torch.from_numpy(image).permute(2, 0, 1).float(), effects)
    assert np.abs(got.permute(1, 2, 0).numpy() - expected).max() <= 0.51 + 1e-3  # the CPU path's rounding


def test_the_device_path_adds_noise_of_the_same_strength_repeatably():
    flat = torch.full((3, 128, 128), 128.0)
    noisy = apply_camera_effects_torch(flat, CameraEffects(0.0, 8.0, 3, 1.0))
    assert abs(noisy.std().item() - 8.0) < 0.3 and abs(noisy.mean().item() - 128.0) < 0.3
    assert torch.equal(noisy, apply_camera_effects_torch(flat, CameraEffects(0.0, 8.0, 3, 1.0)))
    assert not torch.equal(noisy, apply_camera_effects_torch(flat, CameraEffects(0.0, 8.0, 4, 1.0)))


def test_camera_effects_is_a_bounded_strength():
    for strength in (-0.1, 2.5):
        with pytest.raises(TrainingError, match="camera_effects is a strength in"):
            TrainingConfig(camera_effects=strength)


def test_the_trainer_applies_camera_effects_and_the_weights_record_them(tmp_path, tiny_camvid, monkeypatch):
    torch.set_num_threads(1)
    applied = []

    def recording(image, effects):
        applied.append(effects)
        return apply_camera_effects(image, effects)

    monkeypatch.setattr(augment_module, "apply_camera_effects", recording)
    Trainer(tiny_config(tmp_path, tiny_camvid, camera_effects=0.5, max_steps=2)).run()
    assert len(applied) == 4  # 2 steps of 2 crops
    assert all(effects.noise_sigma <= 4.0 and effects.blur_sigma <= 0.75 for effects in applied)
    weights = export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w.safetensors")
    assert earlier_stages(read_info(weights))[-1]["camera_effects"] == 0.5
