"""Training throughput on this CPU (fp32): `singerid train` against a plain reference loop over the same model,
loss and batch shape on random tensors in the same run; FLOPs per 3.5 s segment of the paper's model."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from singerid.checkpoint import build_model
from singerid.config import load_config
from singerid.prepare import prepare
from singerid.synth import QUICK, SynthConfig, synthesize
from singerid.train import build_loss, train

pytestmark = pytest.mark.bench
OVERRIDES = [
    "batch.singers=4",
    "batch.segments=4",
    "train.workers=0",
    "train.validate_every=0",
    "train.passes=6",
    "train.epochs=2",
]


def test_training_segments_per_second(tmp_path: Path) -> None:
    synthesize(SynthConfig(**QUICK), tmp_path / "catalog", workers=2, progress=False)
    prepare(tmp_path / "catalog", tmp_path / "store", workers=2, progress=False)
    config = load_config(Path(__file__).parents[1] / "configs/paper/apnl-m4.yaml", OVERRIDES)
    train(tmp_path / "store", tmp_path / "run", config, progress=False)
    with (tmp_path / "run" / "log.csv").open(encoding="utf-8") as f:
        ours = float(list(csv.DictReader(f))[-1]["segments_per_second"])  # the second epoch: warm

    torch.manual_seed(0)
    model, loss_fn = build_model(config, 64), build_loss(config, 4)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    batch = torch.randn(16, 350, 64)
    steps, start = 6, 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        out = loss_fn(model(batch).view(4, 4, -1))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    reference = steps * 16 / (time.perf_counter() - start)

    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 350, 64))
    flops = counter.get_total_flops()
    print(
        f"\ntraining, paper model (Thin ResNet34, 512-d, 350x64 crops), N=4 x M=4, {torch.get_num_threads()} "
        f"threads: singerid train {ours:.1f} segments/s, plain loop {reference:.1f} segments/s, ratio "
        f"{ours / reference:.2f}; forward {flops / 1e9:.2f} GFLOPs per segment (training ~3x: "
        f"{3 * flops / 1e9:.2f} GFLOPs), i.e. {3 * flops * ours / 1e9:.1f} GFLOP/s achieved"
    )
