"""The two networks: parameter counts, shapes, a few real training steps, ONNX parity."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_node.models import UnknownModelError, build_model, count_macs, count_parameters
from seg_node.models.cgnet import BNPReLU, ChannelWiseConv, ConvBNPReLU
from seg_node.models.export import ONNX_OPSET, export_onnx
from seg_node.training.cpu_training import use_cpu_training_kernels


@pytest.mark.parametrize(("classes", "expected"), [(11, 494_258), (19, 496_306)])
def test_cgnet_m3n21_has_the_authors_parameter_count(classes, expected):
    assert count_parameters(build_model("cgnet", classes)) == expected


def test_cgnet_table6_variants_are_close_to_the_paper():
    paper_millions = {"M3N9": 0.34, "M3N12": 0.38, "M6N12": 0.39, "M3N15": 0.41, "M3N18": 0.45, "M3N21": 0.49}
    for variant, millions in paper_millions.items():
        params = count_parameters(build_model("cgnet", 19, variant=variant))
        assert abs(params / 1e6 - millions) <= 0.015, (variant, params)


def test_contextnet_cn14_has_the_papers_085_million_parameters():
    params = count_parameters(build_model("contextnet", 19))
    assert params == 856_851  # the paper's 0.85 M, with a 1x1 last deep-branch convolution (README)
    # the same weights serve every deep-branch resolution
    for variant in ("cn12", "cn18"):
        assert count_parameters(build_model("contextnet", 19, variant=variant)) == params


@pytest.mark.parametrize(("variant", "paper"), [("cn14-500", 490_459), ("cn14-160", 159_387)])
def test_contextnet_narrow_variants_match_the_paper_counts(variant, paper):
    assert abs(count_parameters(build_model("contextnet", 19, variant=variant)) - paper) / paper < 0.01


@pytest.mark.parametrize("name", ["cgnet", "contextnet"])
@pytest.mark.parametrize("size", [(360, 480), (375, 500), (97, 131), (64, 64)])
def test_logits_come_back_at_the_input_size(name, size):
    model = build_model(name, 11).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 11, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["cgnet", "contextnet"])
def test_full_cityscapes_resolution_runs(name):
    model = build_model(name, 19).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1024, 2048)).shape == (1, 19, 1024, 2048)


def test_contextnet_auxiliary_output_only_in_training():
    model = build_model("contextnet", 11, aux_classifier=True)
    logits, aux = model.train()(torch.randn(2, 3, 64, 96))
    assert logits.shape == aux.shape == (2, 11, 64, 96)
    assert model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 11, 64, 96)


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(UnknownModelError, match="cgnet"):
        build_model("segnet", 11)
    with pytest.raises(UnknownModelError, match="cn14"):
        build_model("contextnet", 11, variant="cn16")


def test_no_relu6_modules_for_tensorrt():
    for name in ("cgnet", "contextnet"):
        assert not any(isinstance(m, torch.nn.ReLU6) for m in build_model(name, 11).modules())


def test_cgnet_global_context_is_a_mean_equal_to_the_old_adaptive_pool():
    # TensorRT turns AdaptiveAvgPool2d(1) into a pooling layer whose window is the whole feature map (over its
    # limit at 1024x2048); the mean over H and W is a reduce layer and gives the same numbers.
    from seg_node.models.cgnet import GlobalContext

    model = build_model("cgnet", 11).eval()
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    torch.manual_seed(0)
    block = GlobalContext(64, 8).eval()
    x = torch.randn(2, 64, 45, 61)
    with torch.no_grad():
        old_weights = block.mlp(torch.nn.AdaptiveAvgPool2d(1)(x).flatten(1))
        assert torch.allclose(block(x), x * old_weights.view(2, 64, 1, 1), atol=1e-6)
    assert torch.allclose(x.mean((2, 3), keepdim=True), torch.nn.AdaptiveAvgPool2d(1)(x), atol=1e-6)
    assert set(block.state_dict()) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}


def test_shipped_cgnet_weights_load_strictly():
    from safetensors.torch import load_file

    from seg_node.weights import find_weights, load_weights

    path = find_weights("cgnet_camvid")
    model, info = load_weights(path)  # raises WeightsMismatchError on any missing or unexpected key
    assert info.architecture == "cgnet"
    assert set(model.state_dict()) == set(load_file(str(path)))
    model.load_state_dict(load_file(str(path)), strict=True)


def test_macs_match_the_paper_flops():
    # Table 9: 6.0 GFLOPs (2 x MACs) for CGNet_M3N21 at 640x360.
    assert count_macs(build_model("cgnet", 19), 360, 640) * 2 / 1e9 == pytest.approx(6.0, abs=0.1)


def _camvid_batch(pairs, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for image_path, label_path in pairs[:count]:
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)[:size, :size]
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)[:size, :size]
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 - 0.5)
        labels.append(torch.from_numpy(label.astype(np.int64)))
    return torch.stack(images), torch.stack(labels)


@pytest.mark.parametrize("name", ["cgnet", "contextnet"])
def test_a_few_training_steps_on_camvid_reduce_the_loss(name, camvid_pairs):
    torch.manual_seed(0)
    images, labels = _camvid_batch(camvid_pairs, 2, 128)
    model = build_model(name, 11).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels, ignore_index=11)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def _trained_twice(module, x, grad):
    """Output, input gradient, parameter gradients and buffers after two training passes of ``module``."""
    results = []
    for _ in range(2):
        inputs = x.clone().requires_grad_()
        output = module(inputs)
        output.backward(grad)
        results += [output, inputs.grad]
    return results + [p.grad for p in module.parameters()] + list(module.buffers())


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_batch_norm_prelu_trains_as_atens(channels_last):
    torch.manual_seed(0)
    aten = BNPReLU(6).train()
    with torch.no_grad():
        aten[0].weight.uniform_(0.5, 1.5)
        aten[0].bias.uniform_(-0.5, 0.5)
        aten[1].weight.uniform_(-0.5, 0.5)
    fused = copy.deepcopy(aten)
    assert use_cpu_training_kernels(fused) == 1
    x = torch.randn(3, 6, 17, 19) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    ours, theirs = _trained_twice(fused, x, grad), _trained_twice(aten, x, grad)
    for ours_tensor, aten_tensor in zip(ours, theirs, strict=True):
        torch.testing.assert_close(ours_tensor, aten_tensor, rtol=1e-5, atol=1e-5)
    assert int(fused[0].num_batches_tracked) == 2
    assert ours[1].is_contiguous(memory_format=torch.channels_last) == channels_last
    fused.load_state_dict(aten.state_dict())  # equal to rounding; eval mode must then give ATen's numbers exactly
    assert fused.eval()(x).equal(aten.eval()(x))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dilation", [2, 4])
def test_dilated_channel_wise_convolutions_gradients_are_atens(channels_last, dilation):
    torch.manual_seed(0)
    aten = ChannelWiseConv(5, dilation).train()
    ours = copy.deepcopy(aten)
    use_cpu_training_kernels(ours)
    x = torch.randn(2, 5, 23, 18)
    if channels_last:
        aten, ours = (m.to(memory_format=torch.channels_last) for m in (aten, ours))
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    for ours_tensor, aten_tensor in zip(_trained_twice(ours, x, grad), _trained_twice(aten, x, grad), strict=True):
        torch.testing.assert_close(ours_tensor, aten_tensor, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_dense_convolutions_gradients_are_atens_whichever_way_the_weight_gradient_is_taken(
    channels_last, stride, monkeypatch
):
    from seg_node.training import cpu_training

    monkeypatch.setattr(cpu_training, "WEIGHT_GRADIENT_FROM_NCHW", {})
    torch.manual_seed(0)
    aten = ConvBNPReLU(5, 7, 3, stride).train()
    x = torch.randn(2, 5, 23, 18)
    if channels_last:
        aten = aten.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    initial = copy.deepcopy(aten)
    with torch.no_grad():
        grad = torch.randn_like(copy.deepcopy(aten)(x))
    theirs = _trained_twice(aten, x, grad)
    # the first backward measures both ways; then each way is taken in turn
    for from_nchw in (None, True, False):
        ours = copy.deepcopy(initial)
        use_cpu_training_kernels(ours)
        if from_nchw is not None:
            measured = cpu_training.WEIGHT_GRADIENT_FROM_NCHW
            measured.update(dict.fromkeys(measured, from_nchw))
        for ours_tensor, aten_tensor in zip(_trained_twice(ours, x, grad), theirs, strict=True):
            # the fused BatchNorm-PReLU rounds its channel sums differently: 2e-5 on gradients about 1
            torch.testing.assert_close(ours_tensor, aten_tensor, rtol=1e-4, atol=1e-5)
        assert ours[0].weight.grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert len(cpu_training.WEIGHT_GRADIENT_FROM_NCHW) == channels_last  # NCHW maps are taken as they are


@pytest.mark.parametrize("channels_last", [False, True])
def test_cgnet_training_step_with_cpu_training_kernels_gives_atens_gradients(channels_last):
    # in float64: in float32 the kernels' other order of summation, amplified through 12 CG blocks, moves the
    # deepest gradients by more than 1e-4 of their size on some machines; in float64 they agree to 2e-12
    torch.manual_seed(0)
    reference = build_model("cgnet", 11, variant="M3N9").train().double()
    images, labels = torch.randn(2, 3, 64, 80, dtype=torch.float64), torch.randint(0, 11, (2, 64, 80))
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model = copy.deepcopy(reference)
    # stage 1's three Convs, the three stage outputs' BN-PReLUs, and five modules in each of the 3 + 9 CG blocks
    assert use_cpu_training_kernels(model) == 3 + 3 + 5 * (3 + 9)
    assert use_cpu_training_kernels(reference, enabled=False) == 0  # plain already
    for network in (model, reference):
        F.cross_entropy(network(images), labels).backward()
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, ours), theirs in zip(model.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12, msg=name)


def test_swapping_the_kernel_modules_in_keeps_the_model_its_weights_and_its_plain_numbers():
    """The swap changes classes only: same parameter objects and state_dict keys; back to plain, plain classes."""
    torch.manual_seed(0)
    plain = build_model("cgnet", 11, variant="M3N9").eval()
    model = copy.deepcopy(plain)
    parameters = [id(p) for p in model.parameters()]
    assert use_cpu_training_kernels(model) == 3 + 3 + 5 * (3 + 9)
    assert [id(p) for p in model.parameters()] == parameters
    assert list(model.state_dict()) == list(plain.state_dict())
    assert type(model.stage1[0]).__module__ == "seg_node.training.cpu_training"
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert model(x).equal(plain(x))  # out of training mode they are the plain modules
    build_model("cgnet", 11, variant="M3N9").load_state_dict(model.state_dict(), strict=True)
    assert use_cpu_training_kernels(model, enabled=False) == 3 + 3 + 5 * (3 + 9)
    assert [type(m) for m in model.modules()] == [type(m) for m in plain.modules()]
    assert use_cpu_training_kernels(build_model("contextnet", 11)) == 0


def test_cpu_training_kernels_run_uncompiled_with_a_warning_when_compiling_fails(tmp_path):
    """Without a working C++ compiler (here: CXX names none), training goes on with ATen's results."""
    script = """
import copy, warnings
import torch
from seg_node.models.cgnet import BNPReLU
from seg_node.training.cpu_training import use_cpu_training_kernels
torch.manual_seed(0)
aten = BNPReLU(4).train()
fused = copy.deepcopy(aten)
use_cpu_training_kernels(fused)
x = torch.randn(2, 4, 8, 8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ours = fused(x)
    ours.sum().backward()
print([str(w.message) for w in caught])
torch.testing.assert_close(ours, aten(x))
print("same results")
"""
    environment = {**os.environ, "CXX": str(tmp_path / "no-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "compiling the CPU training kernels failed" in run.stdout
    assert "uncompiled layers" in run.stdout
    assert run.stdout.rstrip().endswith("same results")


@pytest.mark.parametrize("name", ["cgnet", "contextnet"])
def test_onnx_runtime_matches_pytorch(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(name, 11).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", 96, 128, dynamic_size=True)
    assert onnx.load(str(path)).opset_import[0].version == ONNX_OPSET
    assert list(tmp_path.iterdir()) == [path], "the export must be one self-contained file"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(96, 128), (75, 101)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run(None, {"image": x.numpy()})
        assert np.abs(actual - expected).max() < 1e-4


def test_summary_prints_the_counts():
    out = subprocess.run(
        [sys.executable, "-m", "seg_node.cli.models", "--summary"], check=True, capture_output=True, text=True
    ).stdout
    assert "494,258" in out and "496,306" in out and "856,851" in out
    assert "GMACs@360x640" in out
