"""The checkpoint record: typed, versioned, read back from older singerid versions, resumable."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from singerid.checkpoint import CHECKPOINT_VERSION, Checkpoint, CheckpointError, build_model, load_checkpoint
from singerid.config import load_config
from singerid.encoder import SingerEncoder
from singerid.features import FeatureConfig, FrontendConfig
from singerid.store import FeatureStore
from singerid.train import train

LEGACY = Path(__file__).parent / "fixtures" / "d045454"


def test_a_checkpoint_written_by_d045454_loads_as_a_typed_record() -> None:
    checkpoint = load_checkpoint(LEGACY / "checkpoint.pt")
    assert checkpoint.epoch == 1 and checkpoint.step == 1 and checkpoint.singers == ["s000", "s001"]
    assert checkpoint.config.model.options["channels"] == (4, 8, 16, 32)
    assert checkpoint.config.model.embedding_dim == 16 and checkpoint.config.batch.crop_frames == 100
    assert checkpoint.features == FeatureConfig() and checkpoint.frontend == FrontendConfig()
    assert checkpoint.trained_tracks is not None and len(checkpoint.trained_tracks) == 6
    model = checkpoint.build_model()
    assert not model.training
    embedding = model(torch.randn(2, 350, 64))
    assert embedding.shape == (2, 16) and torch.isfinite(embedding).all()
    encoder = SingerEncoder.load(LEGACY / "checkpoint.pt")
    assert encoder.window_frames == 350 and encoder.metric == "cosine"  # 3.5 s windows, not its 1 s crop
    assert encoder.embed_frames(np.zeros((800, 64), np.float32)).shape == (3, 16)


def test_training_resumes_from_a_checkpoint_written_by_d045454(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(LEGACY / "store", store)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(LEGACY / "checkpoint.pt", run / "last.pt")
    legacy = load_checkpoint(run / "last.pt")
    config = replace(legacy.config, train=replace(legacy.config.train, epochs=2, validate_every=0))
    train(store, run, config, resume=True, progress=False)
    resumed = load_checkpoint(run / "last.pt")
    assert (resumed.epoch, resumed.step) == (2, 2)
    assert any(not torch.equal(resumed.model[k], v) for k, v in legacy.model.items() if v.is_floating_point())


def test_save_and_load_round_trip_with_weights_only(tiny_run: Path, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(tiny_run / "last.pt")
    checkpoint.save(tmp_path / "copy.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]  # no temporary file left
    payload = torch.load(tmp_path / "copy.pt", weights_only=True)  # tensors and plain data only
    assert payload["format"] == "singerid-checkpoint" and payload["version"] == CHECKPOINT_VERSION
    assert "source" not in payload
    again = load_checkpoint(tmp_path / "copy.pt")
    assert (again.config, again.features, again.frontend) == (
        checkpoint.config,
        checkpoint.features,
        checkpoint.frontend,
    )
    assert (again.singers, again.epoch, again.step, again.best_eer) == (
        checkpoint.singers, checkpoint.epoch, checkpoint.step, checkpoint.best_eer
    )  # fmt: skip
    assert torch.equal(again.trained_tracks, checkpoint.trained_tracks)
    assert all(torch.equal(again.model[k], v) for k, v in checkpoint.model.items())


def test_a_field_added_later_takes_its_default_and_a_newer_version_is_refused(tiny_run: Path) -> None:
    payload = load_checkpoint(tiny_run / "last.pt").to_payload()
    for optional in ("trained_tracks", "rng", "scheduler", "val_eer"):  # older files lack fields added since
        del payload[optional]
    older = Checkpoint.from_payload(payload, "older.pt")
    assert older.trained_tracks is None and older.trained_on == set() and math.isnan(older.val_eer)
    with pytest.raises(CheckpointError, match="newer.pt: checkpoint version 99; this singerid reads up to"):
        Checkpoint.from_payload({**payload, "version": 99}, "newer.pt")
    with pytest.raises(CheckpointError, match="not a singerid checkpoint"):
        Checkpoint.from_payload({"format": "something else"}, "other.pt")
    with pytest.raises(CheckpointError, match="damaged.pt: damaged checkpoint"):
        Checkpoint.from_payload({k: v for k, v in payload.items() if k != "features"}, "damaged.pt")


def test_unreadable_files_and_mismatched_weights_name_the_file(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: unreadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    checkpoint = load_checkpoint(tiny_run / "best.pt")
    bigger = load_config(None, ["model.embedding_dim=64"])
    with pytest.raises(CheckpointError, match="weights do not fit"):
        replace(checkpoint, config=bigger).build_model()


def test_the_metric_follows_the_loss(quick_store: Path) -> None:
    store = FeatureStore(quick_store)
    config = load_config(None, ["loss.name=proto", "model.channels=[4,8,16,32]", "model.blocks=[1,1,1,1]"])
    model = build_model(config, 64)
    checkpoint = Checkpoint(config, store.features, store.header.frontend, ["a", "b"], model.state_dict())
    assert checkpoint.metric == "sqeuclidean"  # PNL is trained on squared Euclidean distance (eq. 3)
    assert SingerEncoder.from_checkpoint(checkpoint).metric == "sqeuclidean"
    assert replace(checkpoint, config=load_config(None, ["loss.name=triplet"])).metric == "cosine"
