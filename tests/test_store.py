"""The feature store's index: typed, versioned, and read back from older singerid versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from singerid.features import FeatureConfig, FrontendConfig
from singerid.prepare import prepare
from singerid.store import FeatureStore, StoreError, read_header

LEGACY = Path(__file__).parent / "fixtures" / "d045454"


def test_a_store_written_by_d045454_reads() -> None:
    store = FeatureStore(LEGACY / "store")
    assert store.features == FeatureConfig() and store.header.frontend == FrontendConfig()
    assert len(store) == 6 and {t.split for t in store.tracks} == {"train", "val"}
    assert [r.track_id for r in store.header.rejects] == ["broken"]
    crop = store.crop(0, 10, 100)
    assert crop.shape == (100, 64) and crop.dtype == np.float32 and np.isfinite(crop).all()
    summary = store.summary()
    assert summary["tracks"] == 6 and summary["frontend"]["separation"] == "none"


def test_a_front_end_setting_added_later_never_breaks_resume(quick_catalog: Path, tmp_path: Path) -> None:
    """A store written before a FrontendConfig field existed resumes with that field at its default; one written
    with a field this version has dropped still reads (with a warning)."""
    store = tmp_path / "store"
    prepare(quick_catalog / "metadata.csv", store, progress=False)
    index = json.loads((store / "index.json").read_text(encoding="utf-8"))
    del index["frontend"]["max_track_seconds"]  # as if written before the field existed
    index["tracks"] = index["tracks"][:-3]  # and three tracks still to do
    (store / "index.json").write_text(json.dumps(index), encoding="utf-8")
    result = prepare(quick_catalog / "metadata.csv", store, progress=False)
    assert result.processed == 3 and len(result.header.tracks) == len(index["tracks"]) + 3
    index = json.loads((store / "index.json").read_text(encoding="utf-8"))
    index["frontend"]["retired_setting"] = 1  # written by a version with a field this one lacks
    (store / "index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.warns(UserWarning, match="retired_setting"):
        assert read_header(store).frontend == FrontendConfig()
    with pytest.raises(StoreError, match="other front-end settings"):
        prepare(quick_catalog / "metadata.csv", store, FrontendConfig(min_voice_seconds=2.0), progress=False)


def test_a_store_written_before_banks_resumes_without_redoing_its_tracks(quick_catalog: Path, tmp_path: Path) -> None:
    """A store whose index has no bank (as written before banks) is brought up to date without preparing its
    tracks again; only tracks prepared now get a bank; it still loads, with or without bank shards."""
    store = tmp_path / "store"
    prepare(quick_catalog / "metadata.csv", store, progress=False)
    index = json.loads((store / "index.json").read_text(encoding="utf-8"))
    del index["bank_shards"]
    for track in index["tracks"]:
        for key in ("bank_shard", "bank_offset", "bank_frames"):
            del track[key]
    index["tracks"] = index["tracks"][:-3]
    (store / "index.json").write_text(json.dumps(index), encoding="utf-8")
    for bank in store.glob("bank-*.f16"):
        bank.unlink()
    assert not FeatureStore(store).has_bank
    result = prepare(quick_catalog / "metadata.csv", store, progress=False)
    assert result.processed == 3 and result.skipped == len(index["tracks"])
    reread = FeatureStore(store)
    assert [t.bank_frames > 0 for t in reread.tracks] == [False] * len(index["tracks"]) + [True] * 3
    assert reread.has_bank and len(reread.bank(0)) == 0 and reread.bank(len(reread) - 1).shape[1] == 64


def test_a_newer_or_damaged_index_is_refused_with_its_path(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(LEGACY / "store", store)
    index = json.loads((store / "index.json").read_text(encoding="utf-8"))
    (store / "index.json").write_text(json.dumps({**index, "version": 7}), encoding="utf-8")
    with pytest.raises(StoreError, match="index.json: feature store index version 7; this singerid reads up to 1"):
        FeatureStore(store)
    del index["features"]
    (store / "index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(StoreError, match="index.json: damaged index"):
        FeatureStore(store)
    (store / "index.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(StoreError, match="not a singerid feature store index"):
        FeatureStore(store)


def test_shards_fill_one_track_at_a_time_and_read_back(quick_catalog: Path, tmp_path: Path, monkeypatch) -> None:
    """Tracks stream into shard files of at most SHARD_FRAMES frames; the frames read back are the same whatever
    the shard size (a track never spans two shards)."""
    import singerid.store as store_module

    rows = quick_catalog / "metadata.csv"
    whole = prepare(rows, tmp_path / "whole", progress=False)
    monkeypatch.setattr(store_module, "SHARD_FRAMES", 1500)
    split = prepare(rows, tmp_path / "split", progress=False)
    assert len(whole.header.shards) == 1 and len(split.header.shards) > 10
    tracks_in = [sum(t.shard == i for t in split.header.tracks) for i in range(len(split.header.shards))]
    assert all(frames <= 1500 or count == 1 for frames, count in zip(split.header.shards, tracks_in))
    one, many = FeatureStore(tmp_path / "whole"), FeatureStore(tmp_path / "split")
    assert [t.track_id for t in one.tracks] == [t.track_id for t in many.tracks]
    for i in range(len(one)):
        assert np.array_equal(one.frames(i), many.frames(i))
    assert not list((tmp_path / "split").glob(".*"))  # no temporary shard left
