"""Inference and evaluation end to end: synth -> prepare -> train a few steps -> evaluate / experiment -> report."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY

from singerid.checkpoint import CheckpointError, load_checkpoint
from singerid.cli import main
from singerid.config import load_config
from singerid.features import FeatureConfig, FrontendConfig
from singerid.results import SystemInfo
from singerid.store import FeatureStore
from singerid.train import train


def test_evaluate_writes_the_papers_tables(tiny_run: Path, quick_store: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), str(quick_store), "--queries-per-singer", "5"]) == 0
    printed = capsys.readouterr().out
    assert "Table II" in printed and "Table III" in printed and "Table IV" in printed
    out = tiny_run / f"eval-{quick_store.name}"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["systems"]
    kinds = [r["system"]["kind"] for r in results]
    assert kinds in (["trained", "untrained", "mfcc"], ["trained", "untrained", "mfcc", "peer"])  # peer: test_peer.py
    for result in results:
        assert result["singers"] == {"seen": 2, "unseen": 2, "skipped": 0}
        for group in ("seen", "unseen"):
            for n in ("1", "3", "5"):
                assert (
                    0 <= result["identification"][group][n]["top1"] <= result["identification"][group][n]["top5"] <= 1
                )
            assert 0 <= result["verification"]["one_on_one"][group]["eer"] <= 1
    (trials_file,) = out.glob("trials-*.json")  # saved, so a rerun scores the same trials
    assert json.loads(trials_file.read_text(encoding="utf-8"))
    for name in ("report.md", "table2.csv", "table3.csv", "table4.csv", "top1_vs_segments.png"):
        assert (out / name).stat().st_size > 100, name
    assert list(out.glob("det_*.png")) and list(out.glob("map_*.png"))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Only 2 seen singers: chance top-1 is 50 %, and top-5 is 100 % by construction." in report
    with (out / "table2.csv").open(encoding="utf-8") as f:
        assert len(list(csv.reader(f))) >= 4
    # a rerun reuses the cached embeddings and the saved trials: identical results
    assert main(["evaluate", str(tiny_run), str(quick_store), "--queries-per-singer", "5"]) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["systems"] == results


def test_test_windows_are_350_frames_whatever_the_training_crop(quick_store: Path, tmp_path: Path) -> None:
    """The paper scores 3.5 s segments: a model trained on 1 s crops is still evaluated on 350-frame windows."""
    from singerid.protocols import load_trials

    run = tmp_path / "short crops"
    train(quick_store, run, load_config(None, [*TINY, "batch.crop_frames=100", "train.epochs=1"]), progress=False)
    assert main(["evaluate", str(run), str(quick_store), "--no-baselines", "--queries-per-singer", "2"]) == 0
    out = run / f"eval-{quick_store.name}"
    (cache,) = out.glob("embeddings-*.npz")
    assert "-win350-hop350-" in cache.name
    store = FeatureStore(quick_store)
    frames = {t.track_id: t.frames for t in store.tracks}
    trials = load_trials(next(out.glob("trials-*.json")))
    for track_id, segments in zip(trials.track_ids, trials.track_segments):
        assert segments == max(1, len(range(0, frames[track_id] - 350 + 1, 350)) + (frames[track_id] % 350 > 0))


def test_experiment_grid_resumes(quick_store: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "grid" / "tiny-triplet.yaml"
    config.parent.mkdir()
    config.write_text("loss: {name: triplet, margin: 0.2}\n", encoding="utf-8")
    command = [
        "experiment",
        str(config.parent),
        "--out",
        str(tmp_path / "exp"),
        "--store",
        str(quick_store),
        "--set",
        *TINY,
        "train.epochs=1",
    ]
    assert main(command) == 0
    assert (tmp_path / "exp" / "report.md").is_file()
    capsys.readouterr()
    assert main(command) == 0
    assert "trained already" in capsys.readouterr().out


def test_evaluation_refuses_leaked_singers_and_other_features(tiny_run: Path, quick_store: Path) -> None:
    from singerid.evaluation import check_compatible

    checkpoint = load_checkpoint(tiny_run / "best.pt")
    store = FeatureStore(quick_store)
    check_compatible(checkpoint, store, "run")  # a clean run passes
    unseen = next(t.singer_id for t in store.tracks if t.split == "test_unseen")
    with pytest.raises(CheckpointError, match="'unseen' test singers"):
        check_compatible(replace(checkpoint, singers=[*checkpoint.singers, unseen]), store, "run")
    seen = next(t.singer_id for t in store.tracks if t.split == "test_seen")
    with pytest.raises(CheckpointError, match=f"1 'seen' test singers .* were never trained on \\({seen}\\)"):
        check_compatible(replace(checkpoint, singers=[s for s in checkpoint.singers if s != seen]), store, "run")
    with pytest.raises(CheckpointError, match="features"):
        check_compatible(replace(checkpoint, features=FeatureConfig(n_mels=80)), store, "run")
    with pytest.warns(UserWarning, match="trained on separation 'repet', but .* holds separation 'none'"):
        check_compatible(replace(checkpoint, frontend=FrontendConfig(separation="repet")), store, "run")


def test_evaluation_refuses_a_store_whose_test_tracks_were_trained_on(
    tiny_run: Path, quick_store: Path, tmp_path: Path
) -> None:
    """A store made from a changed catalog can move a seen singer's train track into test_seen."""
    from singerid.evaluation import check_compatible

    payload = load_checkpoint(tiny_run / "best.pt")
    moved = tmp_path / "moved store"
    shutil.copytree(quick_store, moved)
    index = json.loads((moved / "index.json").read_text(encoding="utf-8"))
    track = next(t for t in index["tracks"] if t["split"] == "train")
    track["split"] = "test_seen"
    (moved / "index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"1 test tracks of .* were trained on \\({track['track_id']}\\)"):
        check_compatible(payload, FeatureStore(moved), "run")


def test_trials_follow_the_test_tracks_of_the_store(quick_store: Path, tmp_path: Path) -> None:
    """Evaluating a changed store into the same folder draws new trials instead of reusing stale ones."""
    from singerid.evaluation import EvaluationOptions, MfccStatistics, evaluate_systems
    from singerid.protocols import load_trials

    shrunk = tmp_path / "shrunk store"
    shutil.copytree(quick_store, shrunk)
    index = json.loads((shrunk / "index.json").read_text(encoding="utf-8"))
    dropped = sorted({t["singer_id"] for t in index["tracks"] if t["split"] == "test_seen"})[0]
    index["tracks"] = [t for t in index["tracks"] if not (t["singer_id"] == dropped and t["split"] == "test_seen")]
    (shrunk / "index.json").write_text(json.dumps(index), encoding="utf-8")
    out = tmp_path / "eval"
    info = SystemInfo("mfcc", "-", "-", "none", "mfcc")
    singers_per_run = []
    for folder in (quick_store, shrunk):
        store = FeatureStore(folder)
        evaluate_systems([(info, MfccStatistics(store, 350))], store, out, EvaluationOptions(), progress=False)
        newest = max(out.glob("trials-*.json"), key=lambda path: path.stat().st_mtime_ns)
        groups = load_trials(newest).groups
        singers_per_run.append(set(groups["seen"].singers) if "seen" in groups else set())
    assert len(list(out.glob("trials-*.json"))) == 2
    assert dropped in singers_per_run[0] and dropped not in singers_per_run[1]
