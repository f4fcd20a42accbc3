"""results.json: the typed record between the protocols and the reports, and files of older versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from singerid.report import format_tables
from singerid.results import ResultsError, SystemResult, load_results, save_results

LEGACY = Path(__file__).parent / "fixtures" / "d045454"


def test_results_written_by_d045454_load_and_report() -> None:
    systems = load_results(LEGACY / "results.json")
    assert [s.system.kind for s in systems] == ["trained", "untrained", "mfcc"]
    trained = systems[0]
    assert trained.system.scoring == "cosine"  # not recorded then: every system was scored by cosine
    assert trained.result.identification["seen"][1].top1 == 0.675 and trained.result.top1("unseen", 5) == 0.975
    assert trained.result.one_on_one["seen"].eer == 0.475 and trained.result.centroid[5]["unseen"].trials == 240
    assert "| full-run | 67.50 |" in format_tables(systems)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    systems = load_results(LEGACY / "results.json")
    path = save_results(systems, tmp_path / "results.json")
    again = load_results(path)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in systems]
    original = json.loads((LEGACY / "results.json").read_text(encoding="utf-8"))["systems"]
    assert [s.to_dict() for s in again] == [
        {**entry, "system": {**entry["system"], "scoring": "cosine"}} for entry in original
    ]


def test_other_files_are_refused_with_their_path(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"systems": []}), encoding="utf-8")
    with pytest.raises(ResultsError, match="results.json: not a singerid results file"):
        load_results(path)
    path.write_text(json.dumps({"format": "singerid-results", "version": 2, "systems": []}), encoding="utf-8")
    with pytest.raises(ResultsError, match="results file version 2"):
        load_results(path)
    path.write_text(json.dumps({"format": "singerid-results", "version": 1, "systems": [{"x": 1}]}), encoding="utf-8")
    with pytest.raises(ResultsError, match="needs 'system'"):
        load_results(path)
    with pytest.raises(ResultsError, match="needs 'system'"):
        SystemResult.from_dict({"identification": {}})
