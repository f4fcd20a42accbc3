"""Tests for singerid.report: paper-layout tables beside the paper's numbers, CSV/JSON, plots, write_report."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from singerid.report import (
    DET_CONDITIONS,
    _embedding_coordinates,
    format_tables,
    plot_det,
    plot_embedding_map,
    plot_top1_vs_segments,
    table_ii,
    table_iii,
    table_iv,
    write_report,
)
from singerid.results import SystemResult, load_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def verification(eer: float) -> dict[str, float | int]:
    return {"eer": eer, "min_dcf_01": 0.9, "min_dcf_05": 0.7, "trials": 240, "targets": 120}


def identification(top1: float, top5: float) -> dict[str, float | int]:
    return {"top1": top1, "top5": top5, "trials": 40}


def fake_system(
    name: str, loss: str, setting: str, kind: str, base: float, *, unseen: bool = True, separation: str = "none"
) -> SystemResult:
    """A result with values derived from ``base``, so that each is distinct."""
    groups = {"seen": 0.0, "unseen": -0.05} if unseen else {"seen": 0.0}
    entry = {
        "system": {"name": name, "loss": loss, "setting": setting, "separation": separation, "kind": kind},
        "identification": {
            group: {str(n): identification(base + shift + 0.1 * n, base + shift + 0.1 * n + 0.125) for n in (1, 3, 5)}
            for group, shift in groups.items()
        },
        "verification": {
            "one_on_one": {group: verification(0.2 - shift - base / 10) for group, shift in groups.items()},
            "centroid": {
                str(s): {group: verification(0.2 - shift - base / 10 - 0.01 * s) for group, shift in groups.items()}
                for s in (1, 3, 5)
            },
        },
        "singers": {"seen": 12, "unseen": 12 if unseen else 0, "skipped": 1},
    }
    return SystemResult.from_dict(entry)


@pytest.fixture
def systems() -> list[SystemResult]:
    return [
        fake_system("apnl-m3", "angleproto", "M=3", "trained", 0.4),
        fake_system("tpl-a02", "triplet", "alpha = 0.20", "trained", 0.3),
        fake_system("mfcc", "", "", "mfcc", 0.1, unseen=False),
    ]


def markdown_cells(markdown: str, first_cell: str) -> list[str]:
    """The cells of the markdown row whose first cell is ``first_cell``."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no row {first_cell!r} in:\n{markdown}")


def test_table_ii_markdown_puts_ours_and_the_papers_values_in_place(systems: list[SystemResult]) -> None:
    markdown = table_ii(systems).to_markdown()
    header = markdown_cells(markdown, "System")
    assert header == [
        "Top-1 (%) Seen", "Top-1 (%) Unseen", "Top-5 (%) Seen", "Top-5 (%) Unseen", "EER (%) Seen", "EER (%) Unseen"
    ]  # fmt: skip
    # apnl-m3: top-1 seen 0.5, unseen 0.45; top-5 0.625 / 0.575; EER 0.16 / 0.21
    assert markdown_cells(markdown, "apnl-m3") == ["50.00", "45.00", "62.50", "57.50", "16.00", "21.00"]
    assert markdown_cells(markdown, "↳ paper: A-PNL (M=3)") == ["50.00", "43.85", "71.10", "67.87", "16.10", "19.66"]
    # The triplet setting is matched after normalisation ("alpha = 0.20" -> alpha=0.2) and carries a footnote mark.
    assert markdown_cells(markdown, "tpl-a02") == ["40.00", "35.00", "52.50", "47.50", "17.00", "22.00"]
    paper_triplet = markdown_cells(markdown, "↳ paper: Triplets (α=0.2)")
    assert paper_triplet[0].startswith("43.48") and paper_triplet[0] != "43.48"
    assert paper_triplet[1:] == ["35.02", "65.01", "63.10", "15.92", "19.10"]
    # The MFCC baseline has no paper counterpart and no unseen group.
    assert markdown_cells(markdown, "mfcc") == ["20.00", "-", "32.50", "-", "19.00", "-"]
    assert markdown.count("↳ paper") == 2
    assert "**Without source separation**" in markdown
    assert "Spleeter" in markdown


def test_table_ii_csv_parses_back_to_the_same_values(systems: list[SystemResult]) -> None:
    table = table_ii(systems)
    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [row["system"] for row in parsed] == ["apnl-m3", "tpl-a02", "mfcc"]
    for row, original in zip(parsed, table.rows):
        for column in table.columns:
            for key in (column.key, f"paper_{column.key}"):
                expected = original[key]
                assert (row[key] == "") if expected is None else float(row[key]) == expected
    assert float(parsed[0]["top5_unseen"]) == pytest.approx(57.5)
    assert float(parsed[0]["paper_top1_seen"]) == 50.0
    assert parsed[2]["top1_unseen"] == "" and parsed[2]["paper_row"] == ""


def test_separated_systems_compare_with_the_papers_spleeter_block(systems: list[SystemResult]) -> None:
    separated = fake_system("apnl-m3-repet", "angleproto", "M=3", "trained", 0.4, separation="repet")
    markdown = table_ii([*systems, separated]).to_markdown()
    lines = markdown.splitlines()
    with_block = lines.index("| **With source separation (repet; paper: Spleeter)** | | | | | | |")
    without_block = lines.index("| **Without source separation** | | | | | | |")
    assert with_block < without_block  # the paper's order
    assert lines[with_block + 1].startswith("| apnl-m3-repet |")
    assert markdown_cells("\n".join(lines[with_block:]), "↳ paper: A-PNL (M=3)")[0] == "51.27"
    assert markdown_cells("\n".join(lines[without_block:]), "↳ paper: A-PNL (M=3)")[0] == "50.00"


def test_the_papers_typo_is_kept_and_footnoted() -> None:
    ge2e = fake_system("ge2e-m3", "ge2e", "M=3", "trained", 0.4)
    markdown = table_ii([ge2e]).to_markdown()
    marked = markdown_cells(markdown, "↳ paper: GE2E (M=3)")[3]
    assert marked.startswith("2.52") and marked != "2.52"
    assert "typo" in markdown


def test_table_iii_and_iv_rows(systems: list[SystemResult]) -> None:
    iii = table_iii(systems)
    assert [column.key for column in iii.columns] == [
        f"top1_{group}_{n}" for n in (1, 3, 5) for group in ("seen", "unseen")
    ]
    assert iii.rows[0]["top1_seen_3"] == pytest.approx(70.0)
    assert iii.rows[0]["paper_row"] == ""  # the paper's Table III has A-PNL M=4, not M=3
    assert iii.rows[1]["paper_row"] == "Triplets (α=0.2)"
    assert iii.rows[1]["paper_top1_unseen_5"] == 81.19
    markdown = iii.to_markdown()
    assert markdown_cells(markdown, "mfcc") == ["20.00", "-", "40.00", "-", "60.00", "-"]

    iv = table_iv(systems)
    assert iv.rows[0]["eer_unseen_5"] == pytest.approx(16.0)
    assert iv.rows[0]["paper_eer_seen_5"] == 8.72
    markdown = iv.to_markdown()
    assert markdown_cells(markdown, "tpl-a02") == ["16.00", "21.00", "14.00", "19.00", "12.00", "17.00"]
    assert markdown_cells(markdown, "↳ paper: Triplets (α=0.2)") == [
        "15.92", "19.10", "10.36", "12.68", "8.98", "11.04"
    ]  # fmt: skip
    text = format_tables(systems)
    assert "Table II" in text and "Table III" in text and "Table IV" in text


def det_trials(separated: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat([True, False], 200)
    if separated:
        return np.where(labels, 1.0, -1.0) + 0.01 * rng.standard_normal(labels.size), labels
    return rng.standard_normal(labels.size), labels


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_bytes, (path, len(data))


def test_plot_det_draws_separated_random_and_realistic_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([True, False], 500)
    realistic = rng.standard_normal(labels.size) + 2.0 * labels
    scores = {
        "perfect": det_trials(True, rng),
        "random": det_trials(False, rng),
        "realistic": (realistic, labels),
    }
    path = tmp_path / "det.png"
    plot_det(scores, path, "DET test")
    assert_png(path, 20_000)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="at least one"):
        plot_det({}, tmp_path / "empty.png", "none")


def test_plot_top1_vs_segments(tmp_path: Path, systems: list[SystemResult]) -> None:
    path = tmp_path / "top1.png"
    plot_top1_vs_segments(systems, path)
    assert_png(path, 15_000)


def test_embedding_map_with_five_singers_and_the_pca_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    centres = 5.0 * rng.standard_normal((5, 64))
    embeddings = np.repeat(centres, 12, axis=0) + rng.standard_normal((60, 64))
    labels = [f"singer {i}" for i in range(5) for _ in range(12)]
    path = tmp_path / "map.png"
    plot_embedding_map(embeddings, labels, path, "test map")
    assert_png(path, 15_000)

    coordinates, method = _embedding_coordinates(embeddings)
    assert coordinates.shape == (60, 2) and method.startswith("t-SNE")
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # import fails: PCA fallback
    coordinates, method = _embedding_coordinates(embeddings)
    assert method == "PCA"
    # PCA keeps the clusters apart: each singer's points are closer to their own mean than to another's.
    means = np.stack([coordinates[i * 12 : (i + 1) * 12].mean(axis=0) for i in range(5)])
    nearest = np.argmin(np.linalg.norm(coordinates[:, None] - means[None], axis=2), axis=1)
    assert np.mean(nearest == np.repeat(np.arange(5), 12)) > 0.9
    with pytest.raises(ValueError, match="labels"):
        plot_embedding_map(embeddings, labels[:-1], path, "bad")


def test_write_report_writes_every_promised_file(tmp_path: Path, systems: list[SystemResult]) -> None:
    rng = np.random.default_rng(2)
    det_scores = {
        "apnl-m3": {condition: det_trials(True, rng) for condition in DET_CONDITIONS},
        "tpl-a02": {condition: det_trials(False, rng) for condition in DET_CONDITIONS},
        "mfcc": {"one_on_one/seen": det_trials(False, rng)},
    }
    embeddings = np.repeat(5.0 * rng.standard_normal((5, 16)), 4, axis=0) + rng.standard_normal((20, 16))
    singers = [f"s{i}" for i in range(5) for _ in range(4)]
    out = tmp_path / "report"
    report = write_report(
        systems, out, det_scores, maps={"apnl-m3": (embeddings, singers)}, title="Test report", notes=["a note"]
    )
    assert report == out / "report.md"
    pngs = [
        "top1_vs_segments.png",
        "det_one_on_one_seen.png",
        "det_one_on_one_unseen.png",
        "det_centroid_5_seen.png",
        "det_centroid_5_unseen.png",
        "map_apnl-m3.png",
    ]
    for name in pngs:
        assert_png(out / name)
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Test report") and "- a note" in text
    for name in pngs + ["table2.csv", "table3.csv", "table4.csv", "results.json"]:
        assert f"({name})" in text, name
    assert "**Table II.**" in text and "**Table III.**" in text and "**Table IV.**" in text
    assert table_ii(systems).to_csv() == (out / "table2.csv").read_text(encoding="utf-8")
    assert table_iv(systems).to_csv() == (out / "table4.csv").read_text(encoding="utf-8")
    loaded = load_results(out / "results.json")
    assert [entry.to_dict() for entry in loaded] == json.loads(json.dumps([entry.to_dict() for entry in systems]))
    assert sorted(path.name for path in out.iterdir()) == sorted(
        pngs + ["report.md", "results.json", "table2.csv", "table3.csv", "table4.csv"]
    )  # no temporary files left


def test_write_report_without_scores_or_maps_skips_those_plots(tmp_path: Path, systems: list[SystemResult]) -> None:
    report = write_report(systems[:1], tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "report.md", "results.json", "table2.csv", "table3.csv", "table4.csv", "top1_vs_segments.png"
    ]  # fmt: skip
    assert "det_" not in report.read_text(encoding="utf-8")


def test_protocol_notes_explain_small_groups_and_skipped_singers() -> None:
    from singerid.report import protocol_notes

    result = SystemResult.from_dict(
        {
            "system": {"name": "x"},
            "singers": {"seen": 4, "unseen": 30, "skipped": 2},
            "skipped_singers": {"Björk": "2 tracks; needs 7", "D'Angelo": "the only eligible singer"},
        }
    )
    notes = protocol_notes([result])
    assert notes == [
        "Only 4 seen singers: chance top-1 is 25 %, and top-5 is 100 % by construction.",
        "2 test singers take no part (Björk: 2 tracks; needs 7; D'Angelo: the only eligible singer).",
    ]
    many = SystemResult.from_dict({"system": {"name": "x"}, "singers": {"seen": 40, "unseen": 40}})
    assert protocol_notes([]) == [] and protocol_notes([many]) == []


def test_an_embedding_map_of_many_singers_draws_a_seeded_sample_of_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    embeddings = np.repeat(5.0 * rng.standard_normal((60, 16)), 3, axis=0) + rng.standard_normal((180, 16))
    labels = [f"s{i:03d}" for i in range(60) for _ in range(3)]
    for name in ("a.png", "b.png"):
        plot_embedding_map(embeddings, labels, tmp_path / name, "many", max_singers=10)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # the same singers each time
    assert_png(tmp_path / "a.png", 5_000)
