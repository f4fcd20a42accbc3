"""Several training processes: two CPU processes (gloo, under torchrun) train the weights one process trains on
the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from singerid.checkpoint import build_model, load_checkpoint
from singerid.config import load_config
from singerid.sampler import CropDataset, SingerBatchSampler
from singerid.store import FeatureStore
from singerid.train import build_loss, training_singers

TINY = ["model.channels=[4,8,16,32]", "model.blocks=[1,1,1,1]", "model.embedding_dim=32", "train.workers=0"]


def test_two_process_ddp_trains_like_one_process_on_the_global_batch(quick_store: Path, tmp_path: Path) -> None:
    overrides = TINY + ["train.epochs=1", "batch.singers=4", "batch.segments=2", "train.validate_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port on loopback for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        port,
        "-m",
        "singerid",
        "train",
        str(quick_store),
        str(tmp_path / "ddp"),
        "--set",
        *overrides,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")

    # the reference: one process, the same global batch, each rank's half through the model on its own (as
    # DDP's per-process BatchNorm statistics), the loss over all N singers, one Adam step
    config = load_config(None, overrides)
    store = FeatureStore(quick_store)
    singers, singer_tracks = training_singers(store)
    torch.manual_seed(config.train.seed)
    model, loss_fn = build_model(config, 64), build_loss(config, len(singers))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=config.optim.lr)
    sampler = SingerBatchSampler(singer_tracks, [t.frames for t in store.tracks], 4, 2, 350, config.train.seed)
    (crops,) = list(sampler)
    features, labels = CropDataset(store, 350)[crops]
    embeddings = torch.cat([model(features[:4]), model(features[4:])]).view(4, 2, -1)
    loss_fn(embeddings, labels.view(4, 2)[:, 0]).loss.backward()
    optimizer.step()
    for name, value in model.named_parameters():
        torch.testing.assert_close(ddp.model[name], value.detach(), rtol=1e-4, atol=1e-5, msg=name)
