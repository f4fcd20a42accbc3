"""Tests for singerid.protocols: seeded identification/verification trials on constructed segment embeddings."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from singerid.protocols import (
    ProtocolConfig,
    TrackEmbeddings,
    Trials,
    evaluate,
    load_trials,
    make_trials,
    save_trials,
)

SPLIT_OF_GROUP = {"seen": "test_seen", "unseen": "test_unseen"}


def cluster_tracks(
    rng: np.random.Generator,
    singers: int,
    split: str,
    noise: float,
    *,
    prefix: str | None = None,
    centres: np.ndarray | None = None,
    tracks_per_singer: int = 8,
    segments: int = 8,
    dim: int = 16,
) -> list[TrackEmbeddings]:
    """Each singer a cluster: its segments are a unit-norm centre plus Gaussian noise (noise=inf: pure noise)."""
    prefix = prefix or split
    if centres is None:
        centres = rng.standard_normal((singers, dim))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tracks = []
    for singer in range(singers):
        for track in range(tracks_per_singer):
            if np.isinf(noise):
                values = rng.standard_normal((segments, dim))
            else:
                values = centres[singer] + noise * rng.standard_normal((segments, dim))
            tracks.append(
                TrackEmbeddings(
                    f"{prefix}-singer{singer}", f"{prefix}-{singer}-{track}", split, values.astype(np.float32)
                )
            )
    return tracks


def both_groups(noise: float, singers: int = 12, seed: int = 0, **kwargs) -> list[TrackEmbeddings]:
    rng = np.random.default_rng(seed)
    return cluster_tracks(rng, singers, "test_seen", noise, **kwargs) + cluster_tracks(
        rng, singers, "test_unseen", noise, **kwargs
    )


SMALL = ProtocolConfig(queries_per_singer=10, verification_trials_per_singer=40)


def test_separated_clusters_are_recognised_perfectly() -> None:
    result = evaluate(tracks := both_groups(noise=0.02), make_trials(tracks, SMALL)).to_dict()
    for group in ("seen", "unseen"):
        for n in ("1", "3", "5"):
            assert result["identification"][group][n] == {"top1": 1.0, "top5": 1.0, "trials": 12 * 10}
        conditions = [result["verification"]["one_on_one"][group]]
        conditions += [result["verification"]["centroid"][s][group] for s in ("1", "3", "5")]
        for condition in conditions:
            assert condition["eer"] == 0.0 and condition["min_dcf_01"] == 0.0 and condition["min_dcf_05"] == 0.0
            assert condition["trials"] == 12 * 40 and condition["targets"] == 12 * 20
    assert result["singers"] == {"seen": 12, "unseen": 12, "skipped": 0}
    json.dumps(result)


def test_unstructured_embeddings_score_at_chance() -> None:
    singers = 20
    config = ProtocolConfig(queries_per_singer=20, verification_trials_per_singer=120)
    result = evaluate(tracks := both_groups(noise=np.inf, singers=singers), make_trials(tracks, config)).to_dict()
    for group in ("seen", "unseen"):
        for n in ("1", "3", "5"):
            assert result["identification"][group][n]["top1"] == pytest.approx(1 / singers, abs=0.04)
            assert result["identification"][group][n]["top5"] == pytest.approx(5 / singers, abs=0.08)
        assert result["verification"]["one_on_one"][group]["eer"] == pytest.approx(0.5, abs=0.07)
        for s in ("1", "3", "5"):
            assert result["verification"]["centroid"][s][group]["eer"] == pytest.approx(0.5, abs=0.07)


def test_noisy_clusters_improve_with_more_segments() -> None:
    config = ProtocolConfig(queries_per_singer=20, verification_trials_per_singer=400)
    tracks = both_groups(noise=0.5, singers=30, dim=64)
    result = evaluate(tracks, make_trials(tracks, config)).to_dict()
    for group in ("seen", "unseen"):
        top1 = [result["identification"][group][n]["top1"] for n in ("1", "3", "5")]
        eer = [result["verification"]["centroid"][s][group]["eer"] for s in ("1", "3", "5")]
        assert 0.2 < top1[0] < top1[1] - 0.1 < top1[2] - 0.15 < 0.95, top1
        assert eer[0] - 0.02 > eer[1] > eer[2] + 0.01 > 0.1, eer
        # One-on-one is the centroid protocol with one enrollment segment from any track: about equally hard.
        assert result["verification"]["one_on_one"][group]["eer"] == pytest.approx(eer[0], abs=0.03)


def test_scores_match_a_direct_computation() -> None:
    tracks = both_groups(noise=0.8, singers=5, tracks_per_singer=8, segments=4)
    trials = make_trials(tracks, replace(SMALL, query_segments=(2,), enroll_segments=(3,)))
    result = evaluate(tracks, trials)
    table = {t.track_id: t.segments / np.linalg.norm(t.segments, axis=1, keepdims=True) for t in tracks}

    def embedding(track_positions: np.ndarray, segment_indices: np.ndarray) -> np.ndarray:
        total = sum(table[trials.track_ids[t]][s] for t, s in zip(track_positions, segment_indices))
        return total / np.linalg.norm(total)

    for group_name, group in trials.groups.items():
        prototypes = []
        for enrollment in group.enrollment_tracks:
            total = np.concatenate([table[trials.track_ids[t]] for t in enrollment]).sum(axis=0)
            prototypes.append(total / np.linalg.norm(total))
        queries = group.identification[2]
        correct = 0
        for tracks_row, segments_row, target in zip(queries.queries.tracks, queries.queries.segments, queries.targets):
            correct += int(np.argmax(np.array(prototypes) @ embedding(tracks_row, segments_row)) == target)
        assert result.identification[group_name][2].top1 == pytest.approx(correct / queries.targets.size)
        for key, pairs in (
            (f"one_on_one/{group_name}", group.one_on_one),
            (f"centroid/3/{group_name}", group.centroid[3]),
        ):
            scores, labels = result.verification_scores[key]
            expected = [
                embedding(pairs.enrollment.tracks[i], pairs.enrollment.segments[i])
                @ embedding(pairs.query.tracks[i], pairs.query.segments[i])
                for i in range(labels.size)
            ]
            np.testing.assert_allclose(scores, expected, atol=1e-5)
            np.testing.assert_array_equal(labels, pairs.enrollment_singers == pairs.query_singers)


def test_a_cohort_normalises_verification_scores_only() -> None:
    """With a cohort, each verification score is the AS-norm of its cosine (checked pair by pair against
    scoring.as_norm); identification is untouched."""
    from singerid.scoring import as_norm, cohort_statistics, unit_rows

    tracks = both_groups(noise=0.8, singers=5, tracks_per_singer=8, segments=4)
    trials = make_trials(tracks, replace(SMALL, query_segments=(2,), enroll_segments=(3,)))
    cohort = unit_rows(np.random.default_rng(5).standard_normal((40, 16)))
    raw, normalised = evaluate(tracks, trials), evaluate(tracks, trials, cohort=cohort, top_n=7)
    assert raw.identification == normalised.identification
    table = {t.track_id: unit_rows(t.segments) for t in tracks}
    pairs = trials.groups["seen"].one_on_one
    first = unit_rows(
        np.stack(
            [
                table[trials.track_ids[t]][s]
                for t, s in zip(pairs.enrollment.tracks[:, 0], pairs.enrollment.segments[:, 0])
            ]
        )
    )
    second = unit_rows(
        np.stack([table[trials.track_ids[t]][s] for t, s in zip(pairs.query.tracks[:, 0], pairs.query.segments[:, 0])])
    )
    cosines, _ = raw.verification_scores["one_on_one/seen"]
    expected = as_norm(cosines, cohort_statistics(first, cohort, 7), cohort_statistics(second, cohort, 7))
    np.testing.assert_allclose(normalised.verification_scores["one_on_one/seen"][0], expected, atol=1e-4)


def test_squared_euclidean_scores_match_a_direct_computation() -> None:
    """The prototypical loss's metric (eq. 3): plain means of raw embeddings, minus squared distances."""
    tracks = both_groups(noise=0.8, singers=5, tracks_per_singer=8, segments=4)
    rng = np.random.default_rng(7)
    tracks = [replace(t, segments=t.segments * rng.uniform(0.2, 5.0, (len(t.segments), 1))) for t in tracks]
    trials = make_trials(tracks, replace(SMALL, query_segments=(2,), enroll_segments=(3,)))
    result = evaluate(tracks, trials, metric="sqeuclidean")
    table = {t.track_id: t.segments.astype(np.float64) for t in tracks}

    def mean(track_positions: np.ndarray, segment_indices: np.ndarray) -> np.ndarray:
        return np.mean([table[trials.track_ids[t]][s] for t, s in zip(track_positions, segment_indices)], axis=0)

    for group_name, group in trials.groups.items():
        prototypes = np.stack(
            [
                np.concatenate([table[trials.track_ids[t]] for t in tracks]).mean(axis=0)
                for tracks in group.enrollment_tracks
            ]
        )
        queries = group.identification[2]
        correct = sum(
            int(np.argmin(((prototypes - mean(t, s)) ** 2).sum(axis=1)) == target)
            for t, s, target in zip(queries.queries.tracks, queries.queries.segments, queries.targets)
        )
        assert result.identification[group_name][2].top1 == pytest.approx(correct / queries.targets.size)
        pairs = group.centroid[3]
        scores, _ = result.verification_scores[f"centroid/3/{group_name}"]
        expected = [
            -np.sum(
                (
                    mean(pairs.enrollment.tracks[i], pairs.enrollment.segments[i])
                    - mean(pairs.query.tracks[i], pairs.query.segments[i])
                )
                ** 2
            )
            for i in range(len(scores))
        ]
        np.testing.assert_allclose(scores, expected, rtol=1e-4)
    cosine = evaluate(tracks, trials)  # the norms carry no identity here, but they move squared distances
    assert cosine.verification_scores["one_on_one/seen"][0].max() <= 1.0 + 1e-6
    assert result.verification_scores["one_on_one/seen"][0].max() <= 0.0
    with pytest.raises(ValueError, match="metric"):
        evaluate(tracks, trials, metric="manhattan")


def test_enrollment_and_query_never_share_a_track() -> None:
    tracks = both_groups(noise=0.5, singers=6, tracks_per_singer=9)
    singer_of = {t.track_id: t.singer_id for t in tracks}
    trials = make_trials(tracks, SMALL)
    for group in trials.groups.values():
        track_singer = {}
        for index, singer in enumerate(group.singers):
            enrollment, query = set(group.enrollment_tracks[index]), set(group.query_tracks[index])
            assert len(enrollment) == 6 and len(query) == 3 and not enrollment & query
            for position in enrollment | query:
                assert singer_of[trials.track_ids[position]] == singer
                track_singer[position] = index
        for n, queries in group.identification.items():
            for row, target in zip(queries.queries.tracks, queries.targets):
                assert set(row.tolist()) <= set(group.query_tracks[target]), n
        for pairs in group.centroid.values():
            for enrolled, claimed in zip(pairs.enrollment.tracks, pairs.enrollment_singers):
                assert set(enrolled.tolist()) <= set(group.enrollment_tracks[claimed])
            for queried, owner in zip(pairs.query.tracks[:, 0], pairs.query_singers):
                assert queried in group.query_tracks[owner]
        pairs = group.one_on_one
        first, second = pairs.enrollment.tracks[:, 0], pairs.query.tracks[:, 0]
        np.testing.assert_array_equal([track_singer[t] for t in first], pairs.enrollment_singers)
        np.testing.assert_array_equal([track_singer[t] for t in second], pairs.query_singers)
        assert np.all(first[pairs.labels] != second[pairs.labels]), "a target pair must come from two tracks"


def test_trial_counts_are_balanced_per_singer() -> None:
    tracks = both_groups(noise=0.5, singers=5)
    config = ProtocolConfig(queries_per_singer=7, verification_trials_per_singer=9)
    trials = make_trials(tracks, config)
    for group in trials.groups.values():
        for n, queries in group.identification.items():
            assert queries.queries.tracks.shape == (5 * 7, n)
            np.testing.assert_array_equal(np.bincount(queries.targets), [7] * 5)
            # 2 query songs x 8 segments: a query never repeats a segment.
            pairs_in_rows = queries.queries.tracks * 1000 + queries.queries.segments
            assert all(len(set(row.tolist())) == n for row in pairs_in_rows)
        for pairs in [group.one_on_one, *group.centroid.values()]:
            np.testing.assert_array_equal(np.bincount(pairs.enrollment_singers), [9] * 5)
            np.testing.assert_array_equal(np.bincount(pairs.enrollment_singers[pairs.labels]), [4] * 5)


def test_tiny_query_pool_uses_every_segment_before_repeating() -> None:
    rng = np.random.default_rng(3)
    tracks = cluster_tracks(rng, 3, "test_seen", 0.1, tracks_per_singer=7, segments=2)
    trials = make_trials(tracks, replace(SMALL, query_segments=(5,)))
    queries = trials.groups["seen"].identification[5].queries
    for row_tracks, row_segments in zip(queries.tracks, queries.segments):
        assert len(set(zip(row_tracks.tolist(), row_segments.tolist()))) == 2
    assert evaluate(tracks, trials).identification["seen"][5].top1 == 1.0


def test_seen_and_unseen_singers_are_never_mixed() -> None:
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((8, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Every unseen singer is a twin of a seen singer: mixing the groups would confuse each pair of twins.
    tracks = cluster_tracks(rng, 8, "test_seen", 0.02, centres=centres) + cluster_tracks(
        rng, 8, "test_unseen", 0.02, centres=centres
    )
    split_of_singer = {t.singer_id: t.split for t in tracks}
    split_of_track = {t.track_id: t.split for t in tracks}
    trials = make_trials(tracks, SMALL)
    for group_name, group in trials.groups.items():
        assert {split_of_singer[s] for s in group.singers} == {SPLIT_OF_GROUP[group_name]}
        used = [q.queries.tracks for q in group.identification.values()]
        used += [p.enrollment.tracks for p in [group.one_on_one, *group.centroid.values()]]
        used += [p.query.tracks for p in [group.one_on_one, *group.centroid.values()]]
        used_splits = {split_of_track[trials.track_ids[t]] for array in used for t in np.unique(array)}
        assert used_splits == {SPLIT_OF_GROUP[group_name]}
    result = evaluate(tracks, trials).to_dict()
    for group_name in ("seen", "unseen"):
        assert result["identification"][group_name]["1"]["top1"] == 1.0
        assert result["verification"]["one_on_one"][group_name]["eer"] == 0.0


def test_trials_are_deterministic_for_a_seed() -> None:
    tracks = both_groups(noise=0.5, singers=6)
    first = make_trials(tracks, SMALL).to_dict()
    assert make_trials(tracks, SMALL).to_dict() == first
    shuffled = [tracks[i] for i in np.random.default_rng(1).permutation(len(tracks))]
    assert make_trials(shuffled, SMALL).to_dict() == first
    other_seed = make_trials(tracks, replace(SMALL, seed=1)).to_dict()
    for group in ("seen", "unseen"):
        assert other_seed["groups"][group]["identification"] != first["groups"][group]["identification"]
        assert other_seed["groups"][group]["one_on_one"] != first["groups"][group]["one_on_one"]

    def enrolled(trials: dict) -> set[str]:
        groups = trials["groups"].values()
        return {trials["track_ids"][t] for group in groups for tracks in group["enrollment_tracks"] for t in tracks}

    assert enrolled(other_seed) != enrolled(first)
    # Each kind of draw has its own random stream: more identification queries leave verification as it was.
    more_queries = make_trials(tracks, replace(SMALL, queries_per_singer=30)).to_dict()
    assert more_queries["groups"]["seen"]["one_on_one"] == first["groups"]["seen"]["one_on_one"]
    assert more_queries["groups"]["seen"]["centroid"] == first["groups"]["seen"]["centroid"]


def test_save_and_load_give_identical_results(tmp_path) -> None:
    tracks = both_groups(noise=0.6, singers=6)
    trials = make_trials(tracks, SMALL)
    path = save_trials(trials, tmp_path / "trials" / "trials.json")
    assert [p.name for p in path.parent.iterdir()] == ["trials.json"]
    loaded = load_trials(path)
    assert isinstance(loaded, Trials) and loaded.config == SMALL
    assert loaded.to_dict() == trials.to_dict()
    original, reloaded = evaluate(tracks, trials), evaluate(tracks, loaded)
    assert reloaded.to_dict() == original.to_dict()
    for condition, (scores, labels) in original.verification_scores.items():
        np.testing.assert_array_equal(reloaded.verification_scores[condition][0], scores)
        np.testing.assert_array_equal(reloaded.verification_scores[condition][1], labels)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="bad.json"):
        load_trials(tmp_path / "bad.json")


def test_singers_with_too_few_tracks_are_skipped_and_counted() -> None:
    rng = np.random.default_rng(2)
    tracks = cluster_tracks(rng, 4, "test_seen", 0.05)
    tracks += cluster_tracks(rng, 1, "test_seen", 0.05, prefix="six", tracks_per_singer=6)
    short = cluster_tracks(rng, 1, "test_seen", 0.05, prefix="hollow", tracks_per_singer=7)
    tracks += short[:-1] + [replace(short[-1], segments=np.zeros((0, 16), np.float32))]
    tracks += cluster_tracks(rng, 3, "test_unseen", 0.05)
    trials = make_trials(tracks, SMALL)
    assert set(trials.skipped_singers) == {"six-singer0", "hollow-singer0"}
    assert all(s not in group.singers for group in trials.groups.values() for s in trials.skipped_singers)
    result = evaluate(tracks, trials).to_dict()
    assert result["singers"] == {"seen": 4, "unseen": 3, "skipped": 2}
    assert result["identification"]["seen"]["1"]["trials"] == 4 * 10


def test_group_with_one_eligible_singer_is_absent() -> None:
    rng = np.random.default_rng(4)
    tracks = cluster_tracks(rng, 3, "test_seen", 0.05) + cluster_tracks(rng, 1, "test_unseen", 0.05)
    trials = make_trials(tracks, SMALL)
    assert set(trials.groups) == {"seen"}
    result = evaluate(tracks, trials).to_dict()
    assert set(result["identification"]) == {"seen"}
    assert set(result["verification"]["one_on_one"]) == {"seen"}
    assert all(set(by_group) == {"seen"} for by_group in result["verification"]["centroid"].values())
    assert result["singers"] == {"seen": 3, "unseen": 0, "skipped": 1}


def test_invalid_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="no tracks"):
        make_trials([], SMALL)
    rng = np.random.default_rng(6)
    lonely = cluster_tracks(rng, 1, "test_seen", 0.1) + cluster_tracks(rng, 1, "test_unseen", 0.1)
    with pytest.raises(ValueError, match="no group has 2 singers"):
        make_trials(lonely, SMALL)
    with pytest.raises(ValueError, match="split 'train'"):
        make_trials([replace(lonely[0], split="train")], SMALL)
    with pytest.raises(ValueError, match="more than once"):
        make_trials([lonely[0], lonely[0]], SMALL)
    tracks = both_groups(noise=0.1, singers=3)
    trials = make_trials(tracks, SMALL)
    with pytest.raises(ValueError, match="not among the given embeddings"):
        evaluate(tracks[1:], trials)
    with pytest.raises(ValueError, match="drawn for 8 segments"):
        evaluate([replace(tracks[0], segments=tracks[0].segments[:5]), *tracks[1:]], trials)
    with pytest.raises(ValueError, match="no tracks"):
        evaluate([], trials)
    with pytest.raises(ValueError, match="verification_trials_per_singer"):
        ProtocolConfig(verification_trials_per_singer=1)
    with pytest.raises(ValueError, match="query_segments"):
        ProtocolConfig(query_segments=())
    with pytest.raises(ValueError, match="unknown ProtocolConfig keys"):
        ProtocolConfig.from_dict({"enrol_songs": 6})


@pytest.mark.bench
def test_thousand_singers_evaluate_in_seconds() -> None:
    rng = np.random.default_rng(0)
    tracks = cluster_tracks(rng, 1000, "test_seen", 1.0, tracks_per_singer=10, segments=20, dim=128)
    started = time.perf_counter()
    result = evaluate(tracks, make_trials(tracks))
    assert time.perf_counter() - started < 10.0
    assert result.singers["seen"] == 1000
