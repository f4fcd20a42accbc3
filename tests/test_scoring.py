"""AS-norm: cohort statistics, the normalisation, cohort files, and the commands that use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from singerid.cli import main
from singerid.metrics import verification_result
from singerid.scoring import (
    CohortError,
    cohort_statistics,
    load_cohort,
    normalised_candidates,
    normalised_pair_scores,
    unit_rows,
)
from singerid.store import FeatureStore


def test_cohort_statistics_are_those_of_the_top_n_cosines() -> None:
    rng = np.random.default_rng(0)
    vectors, cohort = unit_rows(rng.standard_normal((2500, 16))), unit_rows(rng.standard_normal((400, 16)))
    means, deviations = cohort_statistics(vectors, cohort, top_n=25)
    for row in (0, 1023, 1024, 2499):  # either side of a block boundary
        top = np.sort(vectors[row] @ cohort.T)[-25:]
        assert means[row] == pytest.approx(top.mean(), abs=1e-6)
        assert deviations[row] == pytest.approx(top.std(), abs=1e-6)
    whole, _ = cohort_statistics(vectors[:3], cohort, top_n=10_000)  # more than the cohort: all of it
    assert whole[0] == pytest.approx(float(np.mean(vectors[0] @ cohort.T)), abs=1e-6)
    with pytest.raises(CohortError, match="at least 1"):
        cohort_statistics(vectors, cohort, top_n=0)


def test_as_norm_removes_per_singer_score_offsets() -> None:
    """Singers whose embeddings lean towards a common direction score high against everyone (a 'hub'); a raw
    threshold then accepts their impostors. AS-norm measures each side's typical score against a cohort that leans
    the same way and takes it off: the EER falls."""
    rng = np.random.default_rng(3)
    dim, singers, per_singer = 32, 60, 6
    common = unit_rows(rng.standard_normal(dim))[0]
    lean = rng.uniform(0.0, 3.0, singers)  # how much each singer leans towards the common direction

    def voices(count: int, leans: np.ndarray) -> np.ndarray:
        centres = unit_rows(rng.standard_normal((count, dim))) + leans[:, None] * common
        return np.repeat(centres, per_singer, axis=0) + 0.2 * rng.standard_normal((count * per_singer, dim))

    tested = unit_rows(voices(singers, lean))
    cohort = unit_rows(voices(200, rng.uniform(0.0, 3.0, 200)))
    owner = np.repeat(np.arange(singers), per_singer)
    first, second = np.triu_indices(len(tested), k=1)
    labels = owner[first] == owner[second]
    raw = np.einsum("ij,ij->i", tested[first], tested[second])
    normalised = normalised_pair_scores(tested[first], tested[second], cohort, top_n=50)
    raw_eer, normalised_eer = verification_result(raw, labels).eer, verification_result(normalised, labels).eer
    assert normalised_eer < 0.5 * raw_eer, (raw_eer, normalised_eer)


def test_a_candidate_is_scored_by_its_closest_prototype() -> None:
    rng = np.random.default_rng(1)
    query = unit_rows(rng.standard_normal(8))[0]
    near, far = unit_rows(query + 0.1 * rng.standard_normal(8)), unit_rows(rng.standard_normal((1, 8)))
    cohort = unit_rows(rng.standard_normal((50, 8)))
    raw, normalised = normalised_candidates(query, [np.concatenate([far, near]), far], cohort, top_n=10)
    assert raw[0] == pytest.approx(float(near[0] @ query)) and raw[1] == pytest.approx(float(far[0] @ query))
    assert normalised[0] > normalised[1]


def test_cohort_files_are_checked(tmp_path: Path) -> None:
    np.savez(tmp_path / "segments.npz", a=np.ones((3, 4)), b=-np.ones((2, 4)), c=np.eye(4)[0])
    cohort = load_cohort(tmp_path / "segments.npz", dim=4)
    assert cohort.shape == (3, 4) and np.allclose(np.linalg.norm(cohort, axis=1), 1.0)
    with pytest.raises(CohortError, match="4 dimensions, the model 8"):
        load_cohort(tmp_path / "segments.npz", dim=8)
    np.savez(tmp_path / "one.npz", a=np.ones(4))
    with pytest.raises(CohortError, match="at least 2 embeddings"):
        load_cohort(tmp_path / "one.npz")
    with pytest.raises(CohortError, match="no such cohort file"):
        load_cohort(tmp_path / "nowhere.npz")
    (tmp_path / "text.npz").write_text("not an archive", encoding="utf-8")
    with pytest.raises(CohortError, match="not an npz"):
        load_cohort(tmp_path / "text.npz")


def test_commands_normalise_with_a_cohort_file(tiny_run: Path, quick_store: Path, tmp_path: Path, capsys) -> None:
    """`embed` of the training singers' files makes a cohort; score-trials, identify and verify use it."""
    checkpoint = str(tiny_run / "best.pt")
    tracks = FeatureStore(quick_store).tracks
    cohort, tests = tmp_path / "cohort.npz", [t for t in tracks if t.split == "test_seen"]
    assert (
        main(["embed", checkpoint, *[t.source for t in tracks if t.split == "train"][:12], "--out", str(cohort)]) == 0
    )
    lines = [f"{int(a.singer_id == b.singer_id)}\t{a.source}\t{b.source}" for a in tests[:6] for b in tests[6:12]]
    (tmp_path / "trials.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = ["score-trials", checkpoint, str(tmp_path / "trials.txt"), "--root", "/", "--out", str(tmp_path / "s")]
    assert main([*command, "--cohort", str(cohort), "--top-n", "5"]) == 0
    assert "with AS-norm (top 5 of" in capsys.readouterr().out
    scores = [float(line.split("\t")[0]) for line in (tmp_path / "s").read_text(encoding="utf-8").splitlines()]
    assert len(scores) == len(lines) and max(abs(s) for s in scores) > 1.0  # normalised, not cosines
    library = tmp_path / "library"
    enroll = ["enroll", str(library), "--checkpoint", checkpoint, "--store", str(quick_store), "--splits", "test_seen"]
    assert main([*enroll, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["identify", str(library), tests[0].source, "--cohort", str(cohort), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.count("; cosine ") == 2
    verify = ["verify", str(library), tests[0].source, "--singer", tests[0].singer_id, "--cohort", str(cohort)]
    assert main(verify) == 2
    assert "give --threshold on the AS-norm scale" in capsys.readouterr().err
    assert main([*verify, "--threshold", "-100"]) == 0
    out = capsys.readouterr().out
    assert f"accepted as {tests[0].singer_id} (AS-norm score" in out
