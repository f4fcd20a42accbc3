"""The command line as a new user runs it."""

from __future__ import annotations

import csv
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from singerid.cli import main
from singerid.encoder import SingerEncoder
from singerid.store import FeatureStore


def test_help_lists_the_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "singerid", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "demo"):
        assert command in result.stdout


def test_synth_quick_writes_a_catalog_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "my catalog"
    assert main(["synth", str(out), "--quick", "--format", "flac", "--workers", "2"]) == 0
    assert "synth: wrote" in capsys.readouterr().out
    with (out / "metadata.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and all(r["path"].endswith(".flac") for r in rows)
    first = out / rows[0]["path"]
    stamp = first.stat().st_mtime_ns
    first_other = out / rows[1]["path"]
    first_other.unlink()  # an interrupted run: one track missing
    assert main(["synth", str(out), "--quick", "--format", "flac", "--workers", "1"]) == 0
    assert first_other.is_file() and first.stat().st_mtime_ns == stamp  # finished work is not redone


def test_user_errors_are_one_line_messages(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad config.yaml"
    bad.write_text("batch: {singrs: 3}\n", encoding="utf-8")
    assert main(["train", str(tmp_path), str(tmp_path / "run"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("singerid: error:") and "bad config.yaml" in err and "did you mean 'singers'" in err
    assert main(["evaluate", str(tmp_path / "no run"), str(tmp_path)]) == 2
    assert "not a feature store" in capsys.readouterr().err
    assert main(["store", "info", str(tmp_path / "nothing")]) == 2
    assert "nothing: not a feature store" in capsys.readouterr().err


def test_public_names_import_lazily() -> None:
    code = (
        "import sys, singerid; assert 'torch' not in sys.modules and 'faiss' not in sys.modules; "
        "from singerid import SingerEncoder, load_config; assert load_config().batch.segments == 3; "
        "print(SingerEncoder.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "SingerEncoder"


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
    assert main(["identify", str(library), str(broken), track.source, "--top-k", "4"]) == 1  # one file skipped
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
    assert main(["embed", str(tiny_run / "best.pt"), track.source, str(empty), "--out", str(tmp_path / "e.npz")]) == 1
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
    assert main(["enroll", str(library), "--checkpoint", str(tiny_run / "best.pt"), "--catalog", str(tmp_path)]) == 1
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
    one_kind = tmp_path / "targets.txt"  # every trial a target: scored and written, no EER, no traceback
    one_kind.write_text(f"1\t{tests[0].source}\t{tests[0].source}\n", encoding="utf-8")
    assert main(["score-trials", str(tiny_run / "best.pt"), str(one_kind), "--out", str(tmp_path / "one.txt")]) == 0
    assert "all target: an EER needs both kinds" in capsys.readouterr().err
    assert len((tmp_path / "one.txt").read_text(encoding="utf-8").splitlines()) == 1
    unusable = tmp_path / "unusable.txt"
    unusable.write_text(f"0\t{tmp_path / 'gone a.wav'}\t{tmp_path / 'gone b.wav'}\n", encoding="utf-8")
    assert main(["score-trials", str(tiny_run / "best.pt"), str(unusable)]) == 2
    assert "no trial of" in capsys.readouterr().err
    for bad in (["--trials-per-singer", "1"], ["--window-frames", "8"], ["--queries-per-singer", "0"]):
        with pytest.raises(SystemExit) as stopped:  # argparse: one line naming the option, exit 2
            main(["evaluate", str(tiny_run), str(quick_store), *bad])
        assert stopped.value.code == 2 and bad[0] in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["enroll", str(tmp_path / "lib"), "--checkpoint", "x.pt", "--store", "s", "--false-accepts", "1"])
    assert "must be in [0, 1)" in capsys.readouterr().err


def test_batch_commands_exit_codes_tell_the_truth(tiny_run: Path, quick_store: Path, tmp_path: Path, capsys) -> None:
    """0: every input used; 1: some skipped; 2: none. An --out is never replaced by an empty archive."""
    track = next(t for t in FeatureStore(quick_store).tracks if t.split == "test_seen")
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    out = tmp_path / "kept.npz"
    out.write_bytes(b"an earlier run's embeddings")
    checkpoint = str(tiny_run / "best.pt")
    assert main(["embed", checkpoint, str(empty), "--out", str(out), "--device", "cpu"]) == 2
    assert out.read_bytes() == b"an earlier run's embeddings"
    assert "no file could be embedded" in capsys.readouterr().err
    assert main(["embed", checkpoint, track.source, str(empty), "--out", str(out), "--workers", "1"]) == 1
    assert list(np.load(out)) == [track.source]
    bare = tmp_path / "embeddings"  # no .npz suffix: written where asked, a file named twice counts once
    assert main(["embed", checkpoint, track.source, track.source, "--out", str(bare)]) == 0
    assert list(np.load(bare)) == [track.source]
    assert not bare.with_suffix(".npz").exists()
    library = tmp_path / "library"
    assert main(["enroll", str(library), "--checkpoint", checkpoint, "--store", str(quick_store), "--quiet"]) == 0
    assert main(["identify", str(library), track.source]) == 0
    capsys.readouterr()
    assert main(["identify", str(library), track.source, track.source]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert main(["identify", str(library), track.source, str(empty)]) == 1
    assert main(["identify", str(library), str(empty)]) == 2
    import torch

    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main(["identify", str(library), track.source, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_a_service_stopped_by_its_manager_exits_0_and_saves(tiny_run: Path, quick_store: Path, tmp_path: Path) -> None:
    import signal
    import time

    library = tmp_path / "library"
    assert main(["enroll", str(library), "--checkpoint", str(tiny_run / "best.pt"), "--store", str(quick_store)]) == 0
    command = [sys.executable, "-m", "singerid", "serve", str(library), "--port", "0", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    line = ""
    while "serve:" not in line and time.monotonic() < deadline:
        line = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "library" in out and "saved" in out


def test_progress_is_whole_lines_in_a_log_and_nothing_when_quiet(capsys) -> None:
    from singerid.progress import progress_bar, set_quiet

    for _ in progress_bar(range(3), desc="step", unit="item"):
        pass
    err = capsys.readouterr().err  # pytest's capture is not a terminal, as a log file is not
    assert "\r" not in err and err.endswith("\n") and "step: 100%" in err and len(err.splitlines()) <= 3
    set_quiet(True)
    try:
        for _ in progress_bar(range(3), desc="step"):
            pass
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""


def test_serve_warns_when_exposed_without_a_token_and_checks_the_token(tmp_path: Path, capsys) -> None:
    legacy = Path(__file__).parent / "fixtures" / "d045454"
    library = tmp_path / "library"
    assert (
        main(["enroll", str(library), "--checkpoint", str(legacy / "checkpoint.pt"), "--store", str(legacy / "store")])
        == 0
    )
    capsys.readouterr()
    with socket.socket() as taken:  # the service cannot start: the warning comes first all the same
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", str(library), "--host", "0.0.0.0", "--port", port, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "serving on 0.0.0.0 without a token" in err and "cannot listen on 0.0.0.0:" in err
        assert main(["serve", str(library), "--port", "0", "--token", "two words", "--device", "cpu"]) == 2
        assert "token" in capsys.readouterr().err


def test_a_library_finds_its_model_after_a_move_and_refuses_another(
    tiny_run: Path, quick_store: Path, tmp_path: Path, capsys
) -> None:
    """The library records its checkpoint relative to itself and by the digest of its weights."""
    import json
    import shutil

    project = tmp_path / "project"
    shutil.copytree(tiny_run, project / "run")
    checkpoint = project / "run" / "best.pt"
    assert main(["enroll", str(project / "library"), "--checkpoint", str(checkpoint), "--store", str(quick_store)]) == 0
    model = json.loads((project / "library" / "library.json").read_text(encoding="utf-8"))["model"]
    assert model["checkpoint"] == "../run/best.pt" and len(model["digest"]) == 12
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(project, moved)  # the run folder and its library move together
    track = next(t for t in FeatureStore(quick_store).tracks if t.split == "test_seen")
    assert main(["identify", str(moved / "library"), track.source]) == 0
    other = tmp_path / "other.pt"
    shutil.copy(Path(__file__).parent / "fixtures" / "d045454" / "checkpoint.pt", other)  # another model
    capsys.readouterr()
    assert main(["enroll", str(moved / "library"), "--checkpoint", str(other), "--store", str(quick_store)]) == 2
    assert "embeddings of two models cannot be compared" in capsys.readouterr().err
    shutil.copy(other, moved / "run" / "best.pt")  # its checkpoint replaced by another model's
    assert main(["identify", str(moved / "library"), track.source]) == 2
    assert "cannot be compared" in capsys.readouterr().err


def test_enrolment_shards_merge_into_the_whole_library(tiny_run: Path, quick_store: Path, tmp_path: Path, capsys):
    """enroll --shard K/N on each machine, then `library merge`: the same singers and vectors as one enrolment."""
    from singerid.library import SingerLibrary

    enroll = ["enroll", "--checkpoint", str(tiny_run / "best.pt"), "--store", str(quick_store), "--quiet"]
    assert main([enroll[0], str(tmp_path / "whole"), *enroll[1:]]) == 0
    parts = [tmp_path / f"part {k}" for k in (1, 2, 3)]
    for k, part in enumerate(parts, start=1):
        assert main([enroll[0], str(part), *enroll[1:], "--shard", f"{k}/3"]) == 0
    sizes = [len(SingerLibrary.open(part)) for part in parts]
    whole = SingerLibrary.open(tmp_path / "whole")
    assert sum(sizes) == len(whole) and min(sizes) >= 1
    assert main(["library", "merge", str(tmp_path / "merged"), *map(str, parts)]) == 0
    assert f"{len(whole)} singers from 3 libraries" in capsys.readouterr().out
    merged = SingerLibrary.open(tmp_path / "merged")
    assert sorted(merged.singers) == sorted(whole.singers)
    for singer in whole.singers:
        np.testing.assert_allclose(merged.prototypes_of(singer), whole.prototypes_of(singer), atol=1e-5)
    track = next(t for t in FeatureStore(quick_store).tracks if t.split == "test_seen")
    assert main(["identify", str(tmp_path / "merged"), track.source]) == 0  # the model is found from the new folder
    assert main(["library", "merge", str(tmp_path / "twice"), str(parts[0]), str(parts[0])]) == 2
    assert "is in two of the libraries" in capsys.readouterr().err


def test_an_option_given_overrides_the_preset_even_at_its_default_value() -> None:
    """`--preset paper --singers 60` means 60 singers, though 60 is also the option's default."""
    from singerid.cli import build_parser, synth_config

    def config(*options: str):  # noqa: ANN202
        return synth_config(build_parser().parse_args(["synth", "out", *options]))

    given = config("--preset", "paper", "--singers", "60", "--seed", "0", "--test-singers", "10")
    assert (given.singers, given.seed, given.test_singers, given.format, given.seconds) == (60, 0, 10, "flac", 10.0)
    assert config("--preset", "paper").singers == 5763 and config().singers == 60 and config().format == "mp3"
    assert config("--quick", "--stems").stems and not config("--quick").stems
