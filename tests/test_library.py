"""SingerLibrary on clustered random embeddings: identification, open set, verification, prototypes, files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from singerid.library import LibraryError, Match, SingerLibrary, Verification, singer_key, track_scores

DIM = 64
SINGERS = 50


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def around(rng: np.random.Generator, centre: np.ndarray, count: int, spread: float = 0.35) -> np.ndarray:
    """``count`` unit embeddings scattered around ``centre`` (cosine to it about 0.94 for spread 0.35)."""
    noise = rng.standard_normal((count, centre.size)) * spread / np.sqrt(centre.size)
    return unit(centre + noise).astype(np.float32)


@pytest.fixture(scope="module")
def clusters() -> dict[str, np.ndarray]:
    """50 enrolled singers + 20 never enrolled; each a random direction with 14 segment embeddings around it."""
    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((SINGERS + 20, DIM)))
    return {f"singer{i:02d}": around(rng, centre, 14) for i, centre in enumerate(centres)}


@pytest.fixture
def library(clusters: dict[str, np.ndarray]) -> SingerLibrary:
    """The first 50 singers, each enrolled from its first 10 segments (the last 4 are held out)."""
    library = SingerLibrary(DIM, model_info={"checkpoint": "best.pt", "sha256": "abc"})
    for singer in list(clusters)[:SINGERS]:
        library.enroll(singer, clusters[singer][:10])
    return library


def enrolled(clusters: dict[str, np.ndarray]) -> list[str]:
    return list(clusters)[:SINGERS]


def test_identify_held_out_segments_top1(clusters, library):
    singers = enrolled(clusters)
    queries = np.concatenate([clusters[singer][10:] for singer in singers])
    truth = np.repeat(singers, 4)
    results = library.identify_batch(queries, top_k=5)
    assert [matches[0].singer_id for matches in results] == list(truth)
    for matches in results:
        assert len(matches) == 5 and len({match.singer_id for match in matches}) == 5
        scores = [match.score for match in matches]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= score <= 1.0 for score in scores)
    # single queries agree with the batch, and the score is the cosine to the singer's centroid
    one = library.identify(queries[0] * 3.0, top_k=2)
    assert one == results[0][:2]
    centroid = unit(clusters[singers[0]][:10].mean(axis=0))
    assert one[0].score == pytest.approx(float(unit(queries[0]) @ centroid), abs=1e-5)


def test_query_of_several_segments_is_averaged(clusters, library):
    singer = enrolled(clusters)[3]
    matches = library.identify(clusters[singer][10:], top_k=1)
    expected = float(unit(clusters[singer][10:].mean(axis=0)) @ unit(clusters[singer][:10].mean(axis=0)))
    assert matches == [Match(singer, pytest.approx(expected, abs=1e-5))]


def test_search_scales_to_100k_singers():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100_000, DIM)).astype(np.float32)
    library = SingerLibrary(DIM)
    for index, vector in enumerate(vectors):
        library.enroll(f"s{index}", vector)
    queries = vectors[:1000] + 0.05 * rng.standard_normal((1000, DIM)).astype(np.float32)
    library.identify_batch(queries[:1])  # builds the index
    start = time.perf_counter()
    results = library.identify_batch(queries, top_k=5)
    elapsed = time.perf_counter() - start
    assert [matches[0].singer_id for matches in results] == [f"s{index}" for index in range(1000)]
    assert elapsed < 5.0, f"1000 queries against 100k singers took {elapsed:.2f} s"


def test_three_prototypes_beat_a_centroid_on_multimodal_singers():
    """Each of 10 singers sings in 3 styles (3 separate sub-clusters). For every style there is another singer
    whose single style lies close to it (cosine 0.8), so the centroid (cosine ~0.58 to each style) loses."""
    rng = np.random.default_rng(3)
    enrolment: dict[str, np.ndarray] = {}
    queries, truth = [], []
    for singer in range(10):
        styles = unit(rng.standard_normal((3, DIM)))
        enrolment[f"multi{singer}"] = np.concatenate([around(rng, style, 12, spread=0.2) for style in styles])
        for number, style in enumerate(styles):
            sideways = unit(rng.standard_normal(DIM) - (rng.standard_normal(DIM) @ style) * style)
            lookalike = unit(style + 0.75 * sideways)
            enrolment[f"lookalike{singer}_{number}"] = around(rng, lookalike, 12, spread=0.2)
            queries.append(around(rng, style, 5, spread=0.2))
            truth += [f"multi{singer}"] * 5
    queries = np.concatenate(queries)

    def accuracy(prototypes: int) -> float:
        library = SingerLibrary(DIM, prototypes=prototypes)
        for singer, embeddings in enrolment.items():
            library.enroll(singer, embeddings)
        found = [matches[0].singer_id for matches in library.identify_batch(queries, top_k=1)]
        return float(np.mean([a == b for a, b in zip(found, truth)]))

    assert accuracy(3) >= 0.95
    assert accuracy(1) <= 0.2
    library = SingerLibrary(DIM, prototypes=3)
    library.enroll("multi", enrolment["multi0"])
    library.enroll("few", enrolment["multi0"][:2])
    assert library.prototypes_of("multi").shape == (3, DIM)
    assert library.prototypes_of("few").shape == (2, DIM)  # fewer segments than prototypes: the segments
    np.testing.assert_allclose(np.linalg.norm(library.prototypes_of("multi"), axis=1), 1.0, atol=1e-5)
    top = library.identify(enrolment["multi0"][30], top_k=5)  # style 3; "few" knows only style 1
    assert [match.singer_id for match in top] == ["multi", "few"]  # each singer once, though it has 3 rows


def test_open_set_rejects_unenrolled_singers_after_calibration(clusters, library):
    singers = list(clusters)
    calibration_known = np.stack([clusters[singer][10] for singer in singers[:SINGERS]])
    calibration_unknown = np.concatenate([clusters[singer][:7] for singer in singers[SINGERS : SINGERS + 10]])
    best = lambda queries: [m[0].score for m in library.identify_batch(queries, top_k=1, open_set=False)]  # noqa: E731
    threshold = library.calibrate_threshold(best(calibration_known), best(calibration_unknown), 0.0)
    assert library.threshold == threshold
    assert max(best(calibration_unknown)) < threshold <= min(best(calibration_known))

    test_known = np.concatenate([clusters[singer][11:] for singer in singers[:SINGERS]])
    test_unknown = np.concatenate([clusters[singer] for singer in singers[SINGERS + 10 :]])
    known_results = library.identify_batch(test_known)
    unknown_results = library.identify_batch(test_unknown)
    assert all(
        matches and matches[0].singer_id == singer
        for matches, singer in zip(known_results, np.repeat(singers[:SINGERS], 3))
    )
    assert all(matches == [] for matches in unknown_results)
    assert library.identify(test_unknown[0], open_set=False) != []


def test_calibrate_threshold_meets_the_false_accept_rate():
    library = SingerLibrary(4)
    nontargets = np.linspace(-0.5, 0.5, 1001)  # a step of 0.001; the 11th highest is 0.49
    threshold = library.calibrate_threshold([0.2, 0.4951, 0.9], nontargets, false_accept_rate=0.01)
    assert np.mean(nontargets >= threshold) <= 0.01
    # the lowest threshold that meets the rate lies just above 0.49; it moves halfway to the next target score
    assert threshold == pytest.approx((0.49 + 0.4951) / 2)
    assert library.threshold == threshold
    threshold = library.calibrate_threshold([0.2], nontargets, false_accept_rate=0.01)  # no target above
    assert 0.49 < threshold < 0.4901
    with pytest.raises(ValueError, match="false_accept_rate"):
        library.calibrate_threshold([0.9], nontargets, 1.0)
    with pytest.raises(ValueError, match="nontarget_scores"):
        library.calibrate_threshold([0.9], [])


def test_verify_accepts_own_and_rejects_others(clusters, library):
    singers = enrolled(clusters)
    query = clusters[singers[0]][12]
    with pytest.raises(ValueError, match="threshold"):
        library.verify(singers[0], query)
    own = library.verify(singers[0], query, threshold=0.5)
    assert own == Verification(singers[0], pytest.approx(own.score), True, 0.5)
    assert own.score > 0.8
    other = library.verify(singers[1], query, threshold=0.5)
    assert not other.accepted and -1.0 <= other.score < 0.5
    with pytest.raises(KeyError, match="'nobody' is not enrolled"):
        library.verify("nobody", query, threshold=0.5)


def test_similar_ranks_the_closest_other_singers():
    rng = np.random.default_rng(11)
    centre, away1, away2 = unit(rng.standard_normal((3, DIM)))
    library = SingerLibrary(DIM)
    library.enroll("me", around(rng, centre, 10, spread=0.1))
    library.enroll("twin", around(rng, unit(centre + 0.4 * away1), 10, spread=0.1))
    library.enroll("cousin", around(rng, unit(centre + 1.2 * away2), 10, spread=0.1))
    for number, direction in enumerate(unit(rng.standard_normal((20, DIM)))):
        library.enroll(f"stranger{number}", around(rng, direction, 10, spread=0.1))
    similar = library.similar("me", top_k=3)
    assert [match.singer_id for match in similar[:2]] == ["twin", "cousin"]
    assert len(similar) == 3 and similar[0].score > similar[1].score > similar[2].score
    assert similar[0].score == pytest.approx(float(library.prototypes_of("me")[0] @ library.prototypes_of("twin")[0]))
    with pytest.raises(KeyError):
        library.similar("nobody")


def test_save_open_round_trip(tmp_path: Path, clusters, library):
    library.threshold = 0.42
    library.save(tmp_path / "lib")
    reopened = SingerLibrary.open(tmp_path / "lib", dim=DIM)
    assert reopened.singers == library.singers and len(reopened) == SINGERS
    assert reopened.threshold == 0.42 and reopened.model_info == {"checkpoint": "best.pt", "sha256": "abc"}
    queries = np.concatenate([clusters[singer][10:] for singer in clusters])
    assert reopened.identify_batch(queries) == library.identify_batch(queries)
    assert reopened.identify_batch(queries, open_set=False) == library.identify_batch(queries, open_set=False)
    assert reopened.similar("singer05") == library.similar("singer05")
    assert sorted(path.name for path in (tmp_path / "lib").iterdir()) == ["library.json", "vectors.npy"]
    metadata = json.loads((tmp_path / "lib" / "library.json").read_text())
    assert metadata["format"] == "singerid-library" and metadata["version"] == 1 and metadata["dim"] == DIM


def test_open_rejects_bad_folders(tmp_path: Path, clusters):
    library = SingerLibrary(DIM, prototypes=2)
    library.enroll("a", clusters["singer00"])
    library.enroll("b", clusters["singer01"])
    folder = tmp_path / "lib"
    library.save(folder)
    metadata_path = folder / "library.json"
    good = json.loads(metadata_path.read_text())

    def open_with(change: dict, match: str, **kwargs) -> None:
        metadata_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(LibraryError, match=match) as error:
            SingerLibrary.open(folder, **kwargs)
        assert "library.json" in str(error.value) or "vectors.npy" in str(error.value)

    open_with({"version": 2}, "unsupported library version 2.*newer")
    open_with({"format": "something-else"}, "not a singer library")
    open_with({"dim": DIM + 1}, "do not belong together")
    open_with({}, "expected 32", dim=32)
    open_with({"singers": [{"id": "a", "rows": 2}, {"id": "a", "rows": 2}]}, "unique")
    metadata_path.write_text("{not json")
    with pytest.raises(LibraryError, match="unreadable"):
        SingerLibrary.open(folder)
    with pytest.raises(LibraryError, match="not a singer library"):
        SingerLibrary.open(tmp_path / "missing")
    metadata_path.write_text(json.dumps(good))
    assert SingerLibrary.open(folder).singers == ["a", "b"]


def test_remove_and_reenroll(clusters):
    library = SingerLibrary(DIM)
    for singer in ("singer00", "singer01", "singer02"):
        library.enroll(singer, clusters[singer][:10])
    assert library.identify(clusters["singer01"][12])[0].singer_id == "singer01"
    library.remove("singer01")
    assert library.singers == ["singer00", "singer02"] and len(library) == 2 and "singer01" not in library
    assert "singer01" not in [match.singer_id for match in library.identify(clusters["singer01"][12])]
    with pytest.raises(KeyError, match="not enrolled"):
        library.remove("singer01")
    library.enroll("singer00", clusters["singer05"][:10], replace=True)  # replaces the old embeddings
    assert len(library) == 2
    assert library.identify(clusters["singer05"][12])[0].singer_id == "singer00"
    assert library.verify("singer00", clusters["singer00"][12], threshold=0.5).accepted is False
    library.enroll("singer03", clusters["singer03"][:10])  # appended to the built index
    assert library.identify(clusters["singer03"][12], top_k=1)[0].singer_id == "singer03"


def test_bad_inputs_are_refused():
    library = SingerLibrary(4)
    with pytest.raises(ValueError, match="shape"):
        library.enroll("a", np.ones((3, 5)))
    with pytest.raises(ValueError, match="all-zero"):
        library.enroll("a", np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        library.enroll("a", np.array([1.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="top_k"):
        library.identify(np.ones(4), top_k=0)
    assert library.identify(np.ones(4)) == []  # an empty library knows no one


def test_import_singerid_works_without_faiss():
    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "import singerid\n"
        "try:\n    import singerid.library\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install singerid[library]" in result.stdout


def test_track_scores_leave_one_track_out_and_best_impostor() -> None:
    """Hand-checkable case: singer a has tracks along e0 and e1, b along e2, c one track along e0 + e2."""
    e = np.eye(4, dtype=np.float32)
    tracks = {
        "a": [np.stack([e[0], e[0]]), e[1][None]],  # two tracks: (e0), (e1)
        "b": [e[2][None], e[2][None]],
        "c": [unit(e[0] + e[2])[None]],  # one track: no target score
    }
    targets, impostors = track_scores(tracks)
    # a: e0 against the centroid of its other track (e1) -> 0; e1 against e0 -> 0; b: e2 against e2 -> 1, twice
    assert sorted(targets.tolist()) == pytest.approx([0.0, 0.0, 1.0, 1.0])
    # centroids: a = unit(e0 + e1), b = e2, c = unit(e0 + e2); each track against the closest other singer
    r = 1 / np.sqrt(2)
    expected = [max(0.0, r), max(0.0, 0.0), max(r, 0.0), max(r, 0.0), max(0.5, r)]  # a0, a1, b0, b1, c0
    assert sorted(impostors.tolist()) == pytest.approx(sorted(expected))
    assert track_scores({"solo": [e[0][None], e[1][None]]})[1].size == 0  # no impostor without a second singer


def test_singer_ids_match_in_any_unicode_form(clusters) -> None:
    library = SingerLibrary(DIM)
    decomposed = unicodedata.normalize("NFD", "Sigur Rós")  # as a macOS folder name gives it
    library.enroll(decomposed, clusters["singer00"])
    library.enroll("Beyoncé", clusters["singer01"])
    assert "Sigur Rós" in library and library.singers == [singer_key("Sigur Rós"), "Beyoncé"]
    assert library.verify("Sigur Rós", clusters["singer00"][0], threshold=0.5).accepted
    assert library.similar(decomposed, top_k=1)[0].singer_id == "Beyoncé"
    with pytest.raises(KeyError, match="did you mean 'Beyoncé'"):
        library.verify("Beyonce", clusters["singer01"][0], threshold=0.5)


def test_enrolling_more_tracks_adds_to_a_singer(clusters, tmp_path):
    """An enrolled singer given more segments has the centroid of all of them, also after a save and open."""
    library = SingerLibrary(DIM)
    library.enroll("singer00", clusters["singer00"][:4])
    library.save(tmp_path / "lib")
    reopened = SingerLibrary.open(tmp_path / "lib")
    reopened.enroll("singer00", clusters["singer00"][4:10])
    whole = SingerLibrary(DIM)
    whole.enroll("singer00", clusters["singer00"][:10])
    np.testing.assert_allclose(reopened.prototypes_of("singer00"), whole.prototypes_of("singer00"), atol=1e-5)


def test_a_large_library_searches_an_approximate_index_saved_with_it(clusters, tmp_path, monkeypatch):
    """Past EXACT_LIMIT prototypes the library builds an inverted-file index, saves it and reads it back instead of
    training and building it again; replaced singers' old rows are never returned."""
    import singerid.library as library_module

    monkeypatch.setattr(library_module, "EXACT_LIMIT", 5)
    monkeypatch.setattr(library_module, "PROBES_PER_ROOT", 100.0)  # every list searched: answers as exact as Flat
    library = SingerLibrary(DIM)
    singers = sorted(clusters)
    for singer in singers:
        library.enroll(singer, clusters[singer][:10])
    queries = np.stack([clusters[singer][12] for singer in singers])
    answers = [matches[0].singer_id for matches in library.identify_batch(queries, top_k=3)]
    assert library.built_with == ("IVF32,SQ8,RFlat", "nprobe=32,k_factor_rf=4")  # 70 singers: 32 lists
    assert answers == singers
    library.save(tmp_path / "lib")
    (first,) = (tmp_path / "lib").glob("index-*.faiss")
    library.save(tmp_path / "lib")  # a new index file is named before the old one goes: a crash keeps a pair
    (second,) = (tmp_path / "lib").glob("index-*.faiss")
    assert second != first and json.loads((tmp_path / "lib" / "library.json").read_text())["index"]["file"] == (
        second.name
    )
    reopened = SingerLibrary.open(tmp_path / "lib")
    assert reopened._index is not None and reopened._index.ntotal == len(singers)  # read, not rebuilt
    assert [m[0].singer_id for m in reopened.identify_batch(queries, top_k=3)] == singers
    reopened.enroll(singers[0], clusters[singers[1]][:10], replace=True)  # its old rows stay in the graph, dead
    matches = reopened.identify(clusters[singers[0]][12], top_k=len(singers))
    assert [m.singer_id for m in matches].count(singers[0]) == 1 and len(matches) == len(singers)


def test_a_library_saved_by_another_auto_rule_keeps_its_index_until_it_grows(clusters, tmp_path, monkeypatch):
    """A library saved when "auto" resolved to another index reports and searches the index in its file; the next
    enrolment rebuilds it as the current rule says."""
    import singerid.library as library_module

    monkeypatch.setattr(library_module, "EXACT_LIMIT", 5)
    monkeypatch.setattr(library_module, "PROBES_PER_ROOT", 100.0)
    library = SingerLibrary(DIM)
    singers = sorted(clusters)
    for singer in singers[:-1]:
        library.enroll(singer, clusters[singer][:10])
    library.save(tmp_path / "lib")
    saved = library.built_with
    monkeypatch.setattr(library_module, "LISTS_PER_ROOT", 1)  # the rule changes between save and open
    reopened = SingerLibrary.open(tmp_path / "lib")
    assert reopened.built_with == saved
    reopened.save(tmp_path / "lib")  # nothing new: the file and its label stay the old rule's
    reopened = SingerLibrary.open(tmp_path / "lib")
    assert reopened.built_with == saved
    assert reopened.identify(clusters[singers[0]][12])[0].singer_id == singers[0]
    reopened.enroll(singers[-1], clusters[singers[-1]][:10])
    assert reopened.identify(clusters[singers[-1]][12])[0].singer_id == singers[-1]
    assert reopened.built_with == reopened.resolved_index(len(singers)) != saved


def test_an_open_library_that_outgrows_exact_search_switches_index(clusters: dict, monkeypatch) -> None:
    """ "auto" follows the size while the library is open: past EXACT_LIMIT prototypes the next search rebuilds the
    index as an inverted file instead of appending to the exact one."""
    import singerid.library as library_module

    monkeypatch.setattr(library_module, "EXACT_LIMIT", 20)
    library = SingerLibrary(DIM)
    singers = sorted(clusters)
    for singer in singers[:10]:
        library.enroll(singer, clusters[singer][:10])
    library.identify(clusters[singers[0]][12])
    assert library.built_with == ("Flat", "")
    for singer in singers[10:]:
        library.enroll(singer, clusters[singer][:10])
    assert library.identify(clusters[singers[-1]][12])[0].singer_id == singers[-1]
    assert library.built_with[0].startswith("IVF")


def test_extending_a_library_keeps_its_threshold_unless_asked(clusters: dict) -> None:
    """The tracks of a later enrolment alone may be few or unlike the rest: the threshold set on the first
    enrolment stays; --recalibrate (recalibrate=True) sets it from the new tracks."""
    from singerid.enrollment import enroll_singers

    def tracks(names: list[str]) -> list[tuple[str, list[np.ndarray]]]:
        return [(name, [clusters[name][i : i + 3] for i in range(0, 12, 3)]) for name in names]

    singers = sorted(clusters)
    library = SingerLibrary(DIM)
    first = enroll_singers(library, tracks(singers[:20]))
    calibrated = library.threshold
    assert calibrated is not None and "equal error rate" in first.threshold
    later = enroll_singers(library, tracks(singers[20:23]), false_accepts=0.0)
    assert library.threshold == calibrated and "kept" in later.threshold and len(library) == 23
    again = enroll_singers(library, tracks(singers[23:26]), false_accepts=0.0, recalibrate=True)
    assert library.threshold != calibrated and "0 % false accepts" in again.threshold
    enroll_singers(library, tracks(singers[26:27]), threshold=0.5)
    assert library.threshold == 0.5
