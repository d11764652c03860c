"""The training loss: the Lovász-softmax term is the mean of 1 - IoU on hard predictions, descends towards the
labels, and reaches the exported JSON as part of the recipe; the hard-pixel cross-entropy (OHEM) averages only the
pixels below its threshold, at least its share of them, and is recorded likewise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_helpers import tiny_config

from seg_node.metrics import ConfusionMatrix
from seg_node.training.checkpoint import export_checkpoint
from seg_node.training.config import TrainingError
from seg_node.training.losses import (
    LOVASZ_STRIDE,
    SegmentationLoss,
    hard_pixel_cross_entropy,
    lovasz_softmax,
)
from seg_node.training.trainer import Trainer
from seg_node.weights import load_weights

CLASSES, VOID = 5, 11


def _labels(generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, CLASSES - 1, (2, 12, 16), generator=generator)  # class 4 never in the truth
    labels[:, :3] = VOID
    return labels


def test_on_one_hot_predictions_it_is_one_minus_the_iou_of_the_classes_present():
    generator = torch.Generator().manual_seed(0)
    labels = _labels(generator)
    prediction = torch.where(torch.rand(labels.shape, generator=generator) < 0.6, labels.clamp(max=CLASSES - 1),
                             torch.randint(0, CLASSES, labels.shape, generator=generator))
    probabilities = torch.nn.functional.one_hot(prediction, CLASSES).permute(0, 3, 1, 2).float()

    matrix = ConfusionMatrix(CLASSES, ignore_index=VOID)
    matrix.update(labels.numpy(), prediction.numpy())
    present = matrix.counts.sum(axis=1) > 0  # the IoU of class 4 (predicted, never true) is not averaged
    expected = 1.0 - float(np.mean(matrix.iou()[present]))
    assert 0.1 < expected < 0.9
    assert float(lovasz_softmax(probabilities, labels, VOID)) == pytest.approx(expected, abs=1e-6)


def test_descending_it_moves_the_predictions_onto_the_labels_and_void_pixels_count_for_nothing():
    generator = torch.Generator().manual_seed(1)
    labels = _labels(generator)
    logits = torch.randn(2, CLASSES, 12, 16, generator=generator, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=200.0)  # softmax saturates: the gradients are small
    first = None
    for _ in range(200):
        loss = lovasz_softmax(logits.softmax(dim=1), labels, VOID)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        assert not logits.grad[:, :, :3].any(), "void pixels got a gradient"
        optimizer.step()
    labelled = labels != VOID
    assert float(loss.detach()) < 0.05 * first
    assert (logits.argmax(dim=1)[labelled] == labels[labelled]).float().mean() > 0.95

    void = torch.full_like(labels, VOID)
    empty = lovasz_softmax(logits.softmax(dim=1), void, VOID)
    empty.backward()
    assert float(empty.detach()) == 0.0


def test_the_loss_adds_the_weighted_lovasz_term_to_the_cross_entropy():
    generator = torch.Generator().manual_seed(2)
    labels, logits = _labels(generator), torch.randn(2, CLASSES, 12, 16, generator=generator)
    weights = torch.rand(CLASSES, generator=generator) + 0.5
    cross_entropy = SegmentationLoss(weights, VOID)(logits, labels)
    assert float(cross_entropy) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels, weight=weights, ignore_index=VOID))
    )
    both = SegmentationLoss(weights, VOID, lovasz_weight=0.5)(logits, labels)
    step = LOVASZ_STRIDE  # the Lovasz term sees a sub-grid of the pixels
    lovasz = lovasz_softmax(logits[:, :, ::step, ::step].softmax(dim=1), labels[:, ::step, ::step], VOID)
    assert float(both) == pytest.approx(float(cross_entropy + 0.5 * lovasz))


def test_a_run_with_the_lovasz_term_trains_and_its_weight_is_part_of_the_recipe(tmp_path, tiny_camvid):
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=1, lovasz_weight=0.5))
    trainer.run()
    assert np.isfinite(trainer.progress.history[-1]["loss"])
    info = load_weights(export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/lovasz.safetensors"))[1]
    assert info.training["stages"][-1]["lovasz_weight"] == 0.5
    with pytest.raises(TrainingError, match="lovasz_weight must be at least 0"):
        tiny_config(tmp_path, tiny_camvid, lovasz_weight=-1)


def test_hard_pixel_cross_entropy_averages_only_the_pixels_below_the_threshold():
    labels = torch.tensor([[[0, 1, 2, VOID]]])  # (1, 1, 4)
    # the true class's probability: 0.9 (easy), 0.5 and 0.2 (hard); the void pixel is confidently wrong
    probabilities = torch.tensor([[0.9, 0.05, 0.05], [0.25, 0.5, 0.25], [0.4, 0.4, 0.2], [0.0, 0.0, 1.0]])
    logits = probabilities.clamp(min=1e-6).log().t().reshape(1, 3, 1, 4)
    hard = hard_pixel_cross_entropy(logits, labels, VOID, threshold=0.7, min_kept=0.1)
    assert float(hard) == pytest.approx(-(np.log(0.5) + np.log(0.2)) / 2, rel=1e-5)
    # at least the min_kept share of the labelled pixels, the highest losses first
    hardest = hard_pixel_cross_entropy(logits, labels, VOID, threshold=0.1, min_kept=0.34)
    assert float(hardest) == pytest.approx(-(np.log(0.5) + np.log(0.2)) / 2, rel=1e-5)
    weights = torch.tensor([1.0, 2.0, 3.0])
    weighted = hard_pixel_cross_entropy(logits, labels, VOID, threshold=0.7, min_kept=0.1, class_weights=weights)
    assert float(weighted) == pytest.approx(-(2 * np.log(0.5) + 3 * np.log(0.2)) / 5, rel=1e-5)


def test_hard_pixel_cross_entropy_gives_easy_and_void_pixels_no_gradient():
    generator = torch.Generator().manual_seed(3)
    labels = _labels(generator)
    logits = torch.randn(2, CLASSES, 12, 16, generator=generator)
    logits[:, :, 3:6] = 0.0
    logits[:, 0, 3:6] = 20.0  # rows 3-5 confidently right where the truth is class 0
    labels[:, 3:6] = 0
    logits.requires_grad_(True)
    loss = SegmentationLoss(None, VOID, ohem_threshold=0.7, ohem_min_kept=1 / 16)(logits, labels)
    loss.backward()
    assert not logits.grad[:, :, :6].any(), "void or easy pixels got a gradient"
    assert logits.grad[:, :, 6:].abs().sum() > 0
    empty = hard_pixel_cross_entropy(logits, torch.full_like(labels, VOID), VOID, threshold=0.7, min_kept=0.1)
    assert float(empty.detach()) == 0.0


def test_a_run_with_ohem_trains_and_the_stage_records_it_the_dropout_and_the_seed(tmp_path, tiny_camvid):
    trainer = Trainer(tiny_config(tmp_path, tiny_camvid, epochs=1, ohem_threshold=0.7, dropout=0.0, seed=3))
    trainer.run()
    assert np.isfinite(trainer.progress.history[-1]["loss"])
    info = load_weights(export_checkpoint(tmp_path / "run/last.pt", tmp_path / "w/ohem.safetensors"))[1]
    stage = info.training["stages"][-1]
    assert (stage["ohem_threshold"], stage["ohem_min_kept"], stage["dropout"], stage["seed"]) == (0.7, 1 / 16, 0.0, 3)
    for bad in ({"ohem_threshold": 1.0}, {"ohem_threshold": 0.7, "ohem_min_kept": 0.0}):
        with pytest.raises(TrainingError, match="ohem_threshold must be in"):
            tiny_config(tmp_path, tiny_camvid, **bad)
