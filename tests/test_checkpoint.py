"""The checkpoint record: typed, versioned, read back from older singerid versions, resumable."""

from __future__ import annotations

import csv
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


def test_a_shipped_base_encoder_loads_by_name_and_fine_tunes(
    tiny_run: Path, quick_store: Path, tmp_path: Path, monkeypatch
) -> None:
    """`base` names the encoder shipped inside the package: float16 weights, no training state; it embeds with no
    path (`SingerEncoder.pretrained()`, `--checkpoint base`) and `train --init base` fine-tunes it."""
    import singerid.checkpoint as checkpoint_module
    from singerid.checkpoint import inference_only
    from singerid.cli import main

    shipped = tmp_path / "pretrained" / "base.pt"
    inference_only(load_checkpoint(tiny_run / "best.pt")).save(shipped)
    monkeypatch.setattr(checkpoint_module, "BASE_FILE", shipped)
    assert shipped.stat().st_size < 0.6 * (tiny_run / "best.pt").stat().st_size  # half the weights, no state
    base = load_checkpoint("base")
    assert base.optimizer == {} and all(v.dtype != torch.float32 for v in base.model.values() if v.is_floating_point())
    encoder = SingerEncoder.pretrained("cpu")
    store = FeatureStore(quick_store)
    full = SingerEncoder.load(tiny_run / "best.pt", "cpu").embed_frames(store.frames(0))
    np.testing.assert_allclose(encoder.embed_frames(store.frames(0)), full, atol=2e-3)  # float16 weights
    library = tmp_path / "library"
    assert main(["enroll", str(library), "--checkpoint", "base", "--store", str(quick_store), "--quiet"]) == 0
    assert main(["identify", str(library), store.tracks[0].source, "--device", "cpu"]) == 0
    run = tmp_path / "fine-tuned"
    tune = ["train.epochs=1", "batch.singers=4", "train.workers=0", "train.validate_every=0"]
    assert main(["train", str(quick_store), str(run), "--init", "base", "--set", *tune, "--quiet"]) == 0
    tuned = load_checkpoint(run / "last.pt")
    assert tuned.config.train.init == "base" and tuned.config.model == base.config.model
    changed = [k for k, v in tuned.model.items() if v.is_floating_point() and not torch.equal(v, base.model[k].float())]
    assert changed  # trained ...
    first = tuned.model["conv1.weight"].flatten()
    start = base.model["conv1.weight"].float().flatten()
    assert torch.nn.functional.cosine_similarity(first, start, dim=0) > 0.9  # ... from the base, not from scratch
    checkpoint_module.BASE_FILE = tmp_path / "nowhere.pt"
    with pytest.raises(CheckpointError, match="has no base encoder"):
        load_checkpoint("base")


def test_the_shipped_base_encoder_tells_new_singers_apart(tmp_path: Path) -> None:
    """The base encoder in the package (trained on the paper-scale procedural catalog of seed 0 and espeak-ng
    singers) on procedural singers drawn with another seed, never heard: each song is matched to the centroid of
    the singer's other songs better than the same network untrained does, and far above chance. Fails if the file
    is missing, damaged or untrained."""
    from singerid.checkpoint import BASE_FILE
    from singerid.synth import SynthConfig, synthesize

    assert BASE_FILE.is_file() and BASE_FILE.stat().st_size < 5_000_000
    base = load_checkpoint("base")
    assert base.optimizer == {} and base.config.model.embedding_dim == 128 and len(base.singers) == 5357
    catalog = tmp_path / "new singers"
    config = SynthConfig(singers=10, tracks=3, test_singers=1, test_tracks=7, seconds=6, seed=20261130)
    synthesize(replace(config, format="flac", sample_rate=16000, channels=1), catalog, progress=False)
    with (catalog / "metadata.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    singers = np.array([row["singer_id"] for row in rows])

    def leave_one_out_top1(encoder: SingerEncoder) -> float:
        vectors = np.stack([encoder.embed_file(catalog / row["path"]) for row in rows])
        hits = 0
        for i in range(len(rows)):
            others = np.arange(len(rows)) != i
            names = sorted(set(singers[others]))
            centroids = np.stack([vectors[others & (singers == name)].mean(axis=0) for name in names])
            hits += names[int(np.argmax(centroids @ vectors[i]))] == singers[i]
        return hits / len(rows)

    trained = leave_one_out_top1(SingerEncoder.pretrained("cpu"))
    torch.manual_seed(0)
    untrained = SingerEncoder(build_model(base.config, base.features.n_mels), base.features, base.frontend, "cpu")
    baseline = leave_one_out_top1(untrained)
    assert trained >= 0.6 and trained > baseline + 0.15, (trained, baseline)
