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
