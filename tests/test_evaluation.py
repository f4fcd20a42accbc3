"""Inference and evaluation end to end: synth -> prepare -> train a few steps -> evaluate / experiment -> report."""

from __future__ import annotations

import csv
import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from singerid.audio import AudioError, load_audio
from singerid.cli import main
from singerid.config import load_config
from singerid.encoder import SingerEncoder, window_starts
from singerid.store import FeatureStore
from singerid.train import train

TINY = [
    "model.channels=[4,8,16,32]",
    "model.blocks=[1,1,1,1]",
    "model.embedding_dim=32",
    "train.workers=0",
    "batch.singers=4",
    "train.epochs=2",
    "train.validate_every=1",
]


@pytest.fixture(scope="module")
def tiny_run(quick_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny apnl"
    train(quick_store, run, load_config(None, TINY), progress=False)
    return run


def test_window_starts_cover_the_track() -> None:
    assert window_starts(100, 350, 350) == [0]
    assert window_starts(1000, 350, 350) == [0, 350, 650]
    assert window_starts(700, 350, 175) == [0, 175, 350]


def test_encoder_embeds_files_like_the_store(tiny_run: Path, quick_store: Path, quick_catalog: Path) -> None:
    encoder = SingerEncoder.load(tiny_run / "best.pt")
    store = FeatureStore(quick_store)
    track = store.tracks[0]
    from_file = encoder.embed_file(track.source)  # lyrics found beside the file
    assert from_file.shape == (32,) and abs(np.linalg.norm(from_file) - 1) < 1e-5
    segments = encoder.embed_frames(store.frames(0))
    from_store = segments.mean(0) / np.linalg.norm(segments.mean(0))
    assert float(from_file @ from_store) > 0.99  # same front end; the store keeps float16
    wave = load_audio(track.source, 44100)
    from_wave = encoder.embed_wave(wave, 44100, lrc=Path(track.source).with_suffix(".lrc"))
    assert float(from_wave @ from_file) > 0.99
    with pytest.raises(AudioError, match="nowhere.mp3"):
        encoder.embed_file(quick_catalog / "nowhere.mp3")


def test_evaluate_writes_the_papers_tables(tiny_run: Path, quick_store: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run), str(quick_store), "--queries-per-singer", "5"]) == 0
    printed = capsys.readouterr().out
    assert "Table II" in printed and "Table III" in printed and "Table IV" in printed
    out = tiny_run / f"eval-{quick_store.name}"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["systems"]
    assert [r["system"]["kind"] for r in results] == ["trained", "untrained", "mfcc"]
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


def test_library_commands_enroll_identify_verify_similar(
    tiny_run: Path, quick_store: Path, tmp_path: Path, capsys
) -> None:
    library = tmp_path / "my library"
    assert (
        main(
            [
                "enroll",
                str(library),
                "--checkpoint",
                str(tiny_run / "best.pt"),
                "--store",
                str(quick_store),
                "--splits",
                "test_seen,test_unseen",
                "--prototypes",
                "2",
            ]
        )
        == 0
    )
    store = FeatureStore(quick_store)
    track = next(t for t in store.tracks if t.split == "test_seen")
    out = capsys.readouterr().out
    assert "4 singers enrolled" in out and "open-set threshold" in out and "at the equal error rate" in out
    from singerid.library import SingerLibrary

    calibrated = SingerLibrary.open(library).threshold
    assert calibrated is not None and -1.0 < calibrated < 1.0
    broken = tmp_path / "broken song.mp3"
    broken.write_bytes(b"")
    assert main(["identify", str(library), str(broken), track.source, "--top-k", "4"]) == 0
    captured = capsys.readouterr()
    line = captured.out
    assert track.source in line and len(re.findall(r"s\d{3} \((-?[0-9.]+)\)", line)) == 4  # four candidates
    assert f"identify: skipped {broken}: empty file" in captured.err  # a bad file does not stop the batch
    main(["verify", str(library), track.source, "--singer", track.singer_id, "--threshold", "-1"])
    assert "accepted" in capsys.readouterr().out
    name = track.singer_id.upper()  # a typo: the message says which singers are near
    assert main(["verify", str(library), track.source, "--singer", name]) == 2
    assert f"did you mean '{track.singer_id}'" in capsys.readouterr().err
    strict = tmp_path / "strict library"  # open set: a threshold above any cosine turns every query away
    assert (
        main(
            [
                "enroll",
                str(strict),
                "--checkpoint",
                str(tiny_run / "best.pt"),
                "--store",
                str(quick_store),
                "--splits",
                "test_seen",
                "--threshold",
                "1.01",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["identify", str(strict), track.source]) == 0
    assert "unknown singer (below the threshold 1.010); closest: " in capsys.readouterr().out
    assert main(["similar", str(library), track.singer_id, "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["similar", str(library), "nobody"]) == 2  # one line, no traceback
    assert "not enrolled" in capsys.readouterr().err
    empty = tmp_path / "empty song.mp3"
    empty.write_bytes(b"")
    assert main(["embed", str(tiny_run / "best.pt"), track.source, str(empty), "--out", str(tmp_path / "e.npz")]) == 0
    assert np.load(tmp_path / "e.npz")[track.source].shape == (32,)
    assert f"embed: skipped {empty}: empty file" in capsys.readouterr().err
    with socket.socket() as taken:  # the service's port is in use: one line, no traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(library), "--port", str(taken.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_enroll_from_a_catalog_skips_files_it_cannot_use(tiny_run: Path, quick_catalog: Path, tmp_path: Path, capsys):
    rows = list(csv.DictReader((quick_catalog / "metadata.csv").open(encoding="utf-8")))
    absolute = {"path", "lrc_path"}
    rows = [{**r, **{k: str(quick_catalog / r[k]) for k in absolute}} for r in rows if r["split"] == "test_seen"]
    (tmp_path / "broken.mp3").write_bytes(b"not audio at all" * 100)
    rows.append({**rows[0], "track_id": "broken", "path": str(tmp_path / "broken.mp3")})
    with (tmp_path / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    library = tmp_path / "library"
    assert main(["enroll", str(library), "--checkpoint", str(tiny_run / "best.pt"), "--catalog", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"enroll: skipped {tmp_path / 'broken.mp3'}: not a readable audio file" in captured.err
    assert f"({len(rows) - 1} tracks, 1 skipped)" in captured.out


def test_export_and_trial_list_scoring(tiny_run: Path, quick_store: Path, tmp_path: Path, capsys) -> None:
    import torch

    assert main(["export", str(tiny_run / "best.pt"), str(tmp_path / "model.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    encoder = SingerEncoder.load(tiny_run / "best.pt")
    features = torch.randn(3, 420, 64)
    torch.testing.assert_close(program(features), encoder.model(features), rtol=1e-4, atol=1e-5)

    store = FeatureStore(quick_store)
    tests = [t for t in store.tracks if t.split.startswith("test")]
    lines, pairs = [], []
    for a in tests[::7]:
        for b in tests[3::9]:
            if a.track_id != b.track_id:  # paths have spaces and apostrophes: tabs, or quotes
                label = int(a.singer_id == b.singer_id)
                quoted = f'{label} "{a.source}" "{b.source}"' if '"' not in a.source + b.source else None
                lines.append(quoted if len(lines) % 2 and quoted else f"{label}\t{a.source}\t{b.source}")
                pairs.append((str(label), a.source, b.source))
    assert {line[0] for line in lines} == {"0", "1"}
    (tmp_path / "trials.txt").write_text("# label path1 path2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "score-trials",
                str(tiny_run / "best.pt"),
                str(tmp_path / "trials.txt"),
                "--root",
                "/",
                "--out",
                str(tmp_path / "scores.txt"),
            ]
        )
        == 0
    )
    assert f"{len(lines)} trials" in capsys.readouterr().out
    scored = [line.split("\t") for line in (tmp_path / "scores.txt").read_text(encoding="utf-8").splitlines()]
    assert [tuple(fields[1:]) for fields in scored] == pairs and all(-1 <= float(f[0]) <= 1 for f in scored)
    (tmp_path / "bad.txt").write_text(f"1 {tests[0].source} {tests[1].source}\n", encoding="utf-8")
    assert main(["score-trials", str(tiny_run / "best.pt"), str(tmp_path / "bad.txt")]) == 2
    assert "quote paths that hold spaces" in capsys.readouterr().err


def test_evaluation_refuses_leaked_singers_and_other_features(tiny_run: Path, quick_store: Path) -> None:
    from singerid.evaluation import check_compatible
    from singerid.train import CheckpointError, load_checkpoint

    payload = load_checkpoint(tiny_run / "best.pt")
    store = FeatureStore(quick_store)
    check_compatible(payload, store, "run")  # a clean run passes
    unseen = next(t.singer_id for t in store.tracks if t.split == "test_unseen")
    with pytest.raises(CheckpointError, match="'unseen' test singers"):
        check_compatible({**payload, "singers": [*payload["singers"], unseen]}, store, "run")
    with pytest.raises(CheckpointError, match="features"):
        check_compatible({**payload, "features": {**payload["features"], "n_mels": 80}}, store, "run")
    with pytest.warns(UserWarning, match="trained on separation 'repet', but .* holds separation 'none'"):
        check_compatible({**payload, "frontend": {**payload["frontend"], "separation": "repet"}}, store, "run")


def test_evaluation_refuses_a_store_whose_test_tracks_were_trained_on(
    tiny_run: Path, quick_store: Path, tmp_path: Path
) -> None:
    """A store made from a changed catalog can move a seen singer's train track into test_seen."""
    from singerid.evaluation import check_compatible
    from singerid.train import CheckpointError, load_checkpoint

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
    info = {"name": "mfcc", "loss": "-", "setting": "-", "separation": "none", "kind": "mfcc"}
    singers_per_run = []
    for folder in (quick_store, shrunk):
        store = FeatureStore(folder)
        evaluate_systems([(info, MfccStatistics(store, 350))], store, out, EvaluationOptions(), progress=False)
        newest = max(out.glob("trials-*.json"), key=lambda path: path.stat().st_mtime_ns)
        groups = load_trials(newest).groups
        singers_per_run.append(set(groups["seen"].singers) if "seen" in groups else set())
    assert len(list(out.glob("trials-*.json"))) == 2
    assert dropped in singers_per_run[0] and dropped not in singers_per_run[1]
