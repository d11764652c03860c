"""CutMix for segmentation (training.cutmix): boxes of images and labels move together, and the trainer mixes."""

from __future__ import annotations

import pytest
import torch
from training_helpers import tiny_config

from seg_node.training import trainer as trainer_module
from seg_node.training.config import TrainingConfig, TrainingError
from seg_node.training.cutmix import cut_mix, mixing_rng
from seg_node.training.lineage import RECIPE
from seg_node.training.trainer import Trainer


def numbered_batch(count: int = 6, height: int = 40, width: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel of sample i holds i, in each of the 3 channels and in the labels."""
    labels = torch.arange(count).view(count, 1, 1).expand(count, height, width).contiguous()
    images = labels.unsqueeze(1).expand(count, 3, height, width).float().contiguous(memory_format=torch.channels_last)
    return images, labels


def test_cut_mix_pastes_a_box_of_another_sample_over_images_and_labels_alike():
    images, labels = numbered_batch()
    mixed_images, mixed_labels = cut_mix(images, labels, 1.0, mixing_rng(seed=3, step=7))

    assert torch.equal(images, numbered_batch()[0]) and torch.equal(labels, numbered_batch()[1])  # inputs kept
    assert mixed_images.is_contiguous(memory_format=torch.channels_last)
    for channel in range(3):
        assert torch.equal(mixed_images[:, channel], mixed_labels.float())  # labels follow their pixels
    changed = 0
    for index in range(len(labels)):
        values = mixed_labels[index].unique().tolist()
        assert index in values or len(values) == 1  # a box may cover the whole crop, never more than two sources
        assert len(values) <= 2
        if len(values) == 2 or values != [index]:
            changed += 1
            partner = next(value for value in values if value != index)
            box = (mixed_labels[index] == partner).nonzero()
            (top, left), (bottom, right) = box.min(0).values, box.max(0).values
            # the pasted pixels are one rectangle
            assert len(box) == (bottom - top + 1) * (right - left + 1)
    assert changed >= 4  # with lambda uniform, an empty box is rare


def test_cut_mix_repeats_for_the_same_step_and_differs_between_steps():
    images, labels = numbered_batch()
    first = cut_mix(images, labels, 0.5, mixing_rng(seed=1, step=10))
    again = cut_mix(images, labels, 0.5, mixing_rng(seed=1, step=10))
    other = [cut_mix(images, labels, 0.5, mixing_rng(seed=1, step=step))[1] for step in range(11, 15)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert any(not torch.equal(first[1], labels_of_step) for labels_of_step in other)


def test_cut_mix_off_or_with_one_sample_leaves_the_batch_as_it_is():
    images, labels = numbered_batch()
    kept_images, kept_labels = cut_mix(images, labels, 0.0, mixing_rng(1, 0))
    assert kept_images is images and kept_labels is labels
    one_image, one_label = images[:1], labels[:1]
    kept_images, kept_labels = cut_mix(one_image, one_label, 1.0, mixing_rng(1, 0))
    assert kept_images is one_image and kept_labels is one_label


def test_cutmix_is_a_probability_and_a_recorded_part_of_the_recipe():
    assert "cutmix" in RECIPE
    with pytest.raises(TrainingError, match="cutmix is a probability"):
        TrainingConfig(cutmix=1.5)


def test_the_trainer_mixes_every_batch_it_trains_on_with_cutmix_on(tmp_path, tiny_camvid, monkeypatch):
    torch.set_num_threads(1)
    calls = []

    def recording_cut_mix(images, labels, probability, rng):
        calls.append((images.shape[0], probability))
        return cut_mix(images, labels, probability, rng)

    monkeypatch.setattr(trainer_module, "cut_mix", recording_cut_mix)
    Trainer(tiny_config(tmp_path, tiny_camvid, cutmix=0.5, max_steps=2)).run()
    assert calls == [(2, 0.5), (2, 0.5)]
    calls.clear()
    Trainer(tiny_config(tmp_path / "off", tiny_camvid, max_steps=2)).run()
    assert calls == []
