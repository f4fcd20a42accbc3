"""Inference throughput of an exported model: onnxruntime against PyTorch on the same CPU, the same model (the
paper's Thin ResNet34, 512-d) and the same batches of 3.5 s windows, in the same run; prints the ratio."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from singerid.checkpoint import Checkpoint, build_model
from singerid.config import load_config
from singerid.encoder import SingerEncoder, export_model
from singerid.features import FeatureConfig, FrontendConfig

pytestmark = pytest.mark.bench


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def test_onnxruntime_against_pytorch(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    config = load_config("paper/apnl-m4")
    torch.manual_seed(0)
    model = build_model(config, 64)
    checkpoint = Checkpoint(config, FeatureConfig(), FrontendConfig(), ["a", "b"], model.state_dict())
    encoder = SingerEncoder.from_checkpoint(checkpoint, "cpu")
    export_model(encoder, tmp_path / "model.onnx", "onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((32, 350, 64)).astype(np.float32)
    with torch.no_grad():
        pytorch = best_of(lambda: encoder.model(torch.from_numpy(batch)))
    runtime = best_of(lambda: session.run(None, {"features": batch}))
    print(
        f"\n32 windows of 3.5 s, {torch.get_num_threads()} threads: PyTorch {32 / pytorch:.0f} windows/s, "
        f"onnxruntime {32 / runtime:.0f} windows/s; ratio onnxruntime / PyTorch {pytorch / runtime:.2f}"
    )
    assert runtime > 0 and pytorch > 0
