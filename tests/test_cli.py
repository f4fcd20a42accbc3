"""The command line as a new user runs it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from singerid.cli import main


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
