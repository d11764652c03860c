"""seg-bench builds every row from one model: the naive row must not move it."""

from __future__ import annotations

import numpy as np
import torch

from seg_node.engine import EngineConfig, create_engine_from_model
from seg_node.evaluation.bench import naive_segmenter
from seg_node.models import build_model
from seg_node.weights import SegClass, WeightsInfo


def test_the_naive_row_leaves_the_shared_model_where_it_was():
    torch.manual_seed(0)
    model = build_model("cgnet", 3, m=2, n=2).eval()
    info = WeightsInfo(architecture="cgnet", variant={"m": 2, "n": 2},
                       classes=[SegClass(i, f"c{i}", (i, i, i)) for i in range(3)],
                       mean=(100.0, 100.0, 100.0), std=(50.0, 50.0, 50.0), input_size=(32, 48),
                       dataset="synthetic", splits=["train"])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    # "meta" stands in for the GPU: a device the CPU export of the next row could not read either
    naive_segmenter(model, info, 32, 48, device="meta")
    assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    frame = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    with create_engine_from_model(model, info, EngineConfig(backend="torch", device="cpu", threads=1)) as engine:
        assert engine.infer(frame).labels.shape == (32, 48)
