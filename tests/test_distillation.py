"""Knowledge distillation: the per-pixel loss, the teacher's inputs, and what the exported JSON says it saw."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config

from seg_node.training.checkpoint import export_checkpoint
from seg_node.training.config import TrainingError
from seg_node.training.distillation import Teacher, distillation_loss
from seg_node.training.lineage import lineage, record_twin
from seg_node.training.trainer import Trainer
from seg_node.weights import SegClass, WeightsInfo, load_weights, read_info

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
TRAIN_ONLY_TEACHER = WEIGHTS / "cgnet_camvid_train.safetensors"
VAL_SEEN_TEACHER = WEIGHTS / "contextnet_camvid.safetensors"  # its last stages trained on train + val
VOID = 11


def logits_and_labels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 11, 4, 5, generator=generator)
    teacher = torch.randn(2, 11, 4, 5, generator=generator)
    labels = torch.randint(0, 11, (2, 4, 5), generator=generator)
    return student, teacher, labels


def test_the_loss_is_the_mean_kl_over_labelled_pixels():
    student, teacher, labels = logits_and_labels()
    labels[0, 0] = VOID
    p_teacher = torch.softmax(teacher, 1)
    kl = (p_teacher * (torch.log_softmax(teacher, 1) - torch.log_softmax(student, 1))).sum(1)
    expected = kl[labels != VOID].mean()
    assert distillation_loss(student, teacher, labels, VOID) == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(teacher, teacher, labels, VOID).item() == pytest.approx(0.0, abs=1e-6)
    # what the student predicts on void does not count
    changed = student.clone()
    changed[0, :, 0] = 100 * torch.randn_like(changed[0, :, 0])
    assert distillation_loss(changed, teacher, labels, VOID) == pytest.approx(expected.item(), rel=1e-5)


def test_the_temperature_softens_both_and_scales_by_its_square():
    student, teacher, labels = logits_and_labels(1)
    at_two = distillation_loss(student, teacher, labels, VOID, temperature=2.0)
    assert at_two == pytest.approx(4 * distillation_loss(student / 2, teacher / 2, labels, VOID).item(), rel=1e-5)


def test_a_crop_without_labelled_pixels_gives_zero_and_keeps_the_graph():
    student, teacher, labels = logits_and_labels(2)
    student.requires_grad_(True)
    loss = distillation_loss(student, teacher, torch.full_like(labels, VOID), VOID)
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None and not student.grad.any()


def test_the_teacher_sees_the_batch_normalised_as_it_was_trained():
    network, info = load_weights(TRAIN_ONLY_TEACHER)
    student_mean, student_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    teacher = Teacher(TRAIN_ONLY_TEACHER, info.num_classes, student_mean, student_std, torch.device("cpu"), False)
    pixels = torch.rand(1, 3, 64, 96)
    as_student = (pixels - torch.tensor(student_mean).view(1, 3, 1, 1)) / torch.tensor(student_std).view(1, 3, 1, 1)
    as_teacher = (pixels - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = network.eval()(as_teacher)
    got = teacher(as_student, expected.shape[2:])
    assert torch.allclose(got, expected, atol=1e-4)
    assert teacher(as_student, torch.Size((16, 24))).shape == (1, info.num_classes, 16, 24)
    sha256 = hashlib.sha256(TRAIN_ONLY_TEACHER.read_bytes()).hexdigest()
    assert teacher.provenance() == {"weights": "cgnet_camvid_train", "sha256": sha256, "splits": ["train"],
                                    "drives": None}, "a JSON from before drives were recorded: unknown"


def test_a_teacher_of_other_classes_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="predicts 11 classes, the training set has 5"):
        Teacher(TRAIN_ONLY_TEACHER, 5, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"), False)
    with pytest.raises(TrainingError, match="teacher: "):
        Teacher(tmp_path / "absent.safetensors", 11, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"), False)


def test_an_ensemble_teacher_averages_its_members_probabilities_and_the_mirrored_batch():
    cpu = torch.device("cpu")
    contextnet = WEIGHTS / "contextnet_camvid_drives.safetensors"
    images = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    size = torch.Size((48, 64))
    members = [Teacher(path, 11, (0.0,) * 3, (1.0,) * 3, cpu, False) for path in (TRAIN_ONLY_TEACHER, contextnet)]
    cgnet, other = (member(images, size).softmax(1) for member in members)
    ensemble = Teacher([TRAIN_ONLY_TEACHER, contextnet], 11, (0.0,) * 3, (1.0,) * 3, cpu, False, shares=(3, 1))
    assert torch.allclose(ensemble(images, size).softmax(1), 0.75 * cgnet + 0.25 * other, atol=1e-5)
    mirrored = members[0](images.flip(3), size).softmax(1).flip(3)
    flipped = Teacher(TRAIN_ONLY_TEACHER, 11, (0.0,) * 3, (1.0,) * 3, cpu, False, flip=True)
    assert torch.allclose(flipped(images, size).softmax(1), (cgnet + mirrored) / 2, atol=1e-5)
    assert not torch.allclose(cgnet, mirrored, atol=1e-2), "the mirrored batch must change something to be tested"
    provenance = Teacher([TRAIN_ONLY_TEACHER, VAL_SEEN_TEACHER], 11, (0.0,) * 3, (1.0,) * 3, cpu, False).provenance()
    assert provenance["weights"] == ["cgnet_camvid_train", "contextnet_camvid"]
    assert provenance["sha256"] == [hashlib.sha256(path.read_bytes()).hexdigest()
                                    for path in (TRAIN_ONLY_TEACHER, VAL_SEEN_TEACHER)]
    assert provenance["splits"] == ["train", "val"], "what any member saw counts as seen"


def test_ensemble_shares_must_match_the_teachers(tmp_path, tiny_camvid):
    with pytest.raises(TrainingError, match=r"one share above 0 per teacher \(2 given\)"):
        Teacher([TRAIN_ONLY_TEACHER] * 2, 11, (0.0,) * 3, (1.0,) * 3, torch.device("cpu"), False, shares=(1.0, 0.0))
    with pytest.raises(TrainingError, match=r"teacher_shares: one share per teacher \(1\)"):
        tiny_config(tmp_path, tiny_camvid, teacher=str(TRAIN_ONLY_TEACHER), teacher_shares=[0.5, 0.5])
    # a recipe names one teacher as a string, several as a list; runs from before the list read teacher: none
    assert tiny_config(tmp_path, tiny_camvid, teacher=str(TRAIN_ONLY_TEACHER)).teacher == [str(TRAIN_ONLY_TEACHER)]
    assert tiny_config(tmp_path, tiny_camvid, teacher=None).teacher == []


def test_distillation_settings_must_be_positive(tmp_path, tiny_camvid):
    for bad in ({"distill_weight": 0.0}, {"distill_temperature": -1.0}):
        with pytest.raises(TrainingError, match="distill_weight and distill_temperature must be above 0"):
            tiny_config(tmp_path, tiny_camvid, teacher=str(TRAIN_ONLY_TEACHER), **bad)


def test_a_distilled_twin_needs_a_distilled_partner():
    def info(teacher: str | None, splits: list[str]) -> WeightsInfo:
        stage = {"splits": splits, "lr": 0.01, "planned_epochs": 3, "epochs": 3, "steps": 9, "hardware": ["CPU"],
                 "teacher": teacher}
        if teacher:
            stage |= {"teacher_splits": ["train"] if teacher.endswith("_train") else ["train", "val"],
                      "distill_weight": 1.0, "distill_temperature": 1.0}
        splits, val_miou, training = lineage([stage], 0.6)
        return WeightsInfo("contextnet", {}, [SegClass(0, "Sky", (1, 2, 3))], (0.0,) * 3, (1.0,) * 3, (360, 480),
                           "camvid", splits, val_miou=val_miou, training=training)

    distilled_twin = info("cgnet_camvid_train", ["train"])
    assert distilled_twin.val_miou == 0.6
    assert info("cgnet_camvid", ["train"]).val_miou is None, "a teacher that saw val makes the student see it"
    with pytest.raises(TrainingError, match="another recipe: teacher None vs 'cgnet_camvid_train'"):
        record_twin(info(None, ["train", "val"]), distilled_twin, "x")
    shipped = info("cgnet_camvid", ["train", "val"])
    record_twin(shipped, distilled_twin, "x")
    assert shipped.training["twin"]["val_miou"] == 0.6
    stronger = copy.deepcopy(distilled_twin)
    stronger.training["stages"][0]["distill_weight"] = 2.0
    with pytest.raises(TrainingError, match="distill_weight 1.0 vs 2.0"):
        record_twin(info("cgnet_camvid", ["train", "val"]), stronger, "x")


@pytest.mark.slow
def test_a_run_with_a_teacher_trains_and_exports_what_the_student_saw(tmp_path, tiny_camvid):
    def distilled(folder: str, teacher: Path) -> WeightsInfo:
        config = tiny_config(tmp_path / folder, tiny_camvid, val_list=tiny_camvid["val"], epochs=1,
                             teacher=str(teacher), distill_weight=0.5, distill_temperature=2.0)
        trainer = Trainer(config)
        trainer.run()
        assert trainer.provenance["teacher"] == {
            "weights": teacher.stem, "sha256": hashlib.sha256(teacher.read_bytes()).hexdigest(),
            "splits": read_info(teacher).splits, "drives": read_info(teacher).training.get("drives"),
        }
        return read_info(export_checkpoint(tmp_path / folder / "run/last.pt", tmp_path / f"{folder}.safetensors"))

    # a teacher of the student's own training frames (drive 0001TP): the student's val (drive 0016E5) stays unseen
    Trainer(tiny_config(tmp_path / "teacher", tiny_camvid, epochs=1)).run()
    own_teacher = export_checkpoint(tmp_path / "teacher/run/last.pt", tmp_path / "w/tiny_teacher.safetensors")
    assert read_info(own_teacher).training["drives"] == ["0001TP"]
    unseen = distilled("unseen", own_teacher)
    stage = unseen.training["stages"][-1]
    assert stage["teacher"] == "tiny_teacher" and stage["teacher_splits"] == ["train"]
    assert stage["teacher_drives"] == ["0001TP"]
    assert stage["teacher_sha256"] == hashlib.sha256(own_teacher.read_bytes()).hexdigest()
    assert stage["distill_weight"] == 0.5 and stage["distill_temperature"] == 2.0
    assert stage["teacher_shares"] == [] and stage["teacher_flip"] is False
    assert unseen.splits == ["train"] and unseen.val_miou is not None
    # the shipped train-only CGNet trained on train.txt, which holds drive 0016E5, and its JSON names no drives
    through_train = distilled("through_train", TRAIN_ONLY_TEACHER)
    assert through_train.training["stages"][-1]["teacher_drives"] is None and through_train.val_miou is None
    seen = distilled("seen", VAL_SEEN_TEACHER)
    assert seen.splits == ["train", "val"] and seen.val_miou is None, "val reached the student through its teacher"
