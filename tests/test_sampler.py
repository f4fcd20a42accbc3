"""The N singers x M segments sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from singerid.sampler import SingerBatchSampler


def make_sampler(**kwargs) -> SingerBatchSampler:
    singer_tracks = [[3 * s, 3 * s + 1, 3 * s + 2] for s in range(10)]
    singer_tracks[9] = [27]  # a singer with one track
    frames = [400 + 10 * i for i in range(28)]
    options = {"singers": 4, "segments": 3, "crop_frames": 350, "seed": 1}
    options.update(kwargs)
    return SingerBatchSampler(singer_tracks, frames, **options)


def test_epoch_covers_every_singer_and_batches_are_distinct() -> None:
    sampler = make_sampler()
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    seen = Counter()
    for crops in batches:
        singers = [c.label for c in crops]
        assert len(crops) == 12 and len(set(singers)) == 4 and Counter(singers) == {s: 3 for s in set(singers)}
        seen.update(set(singers))
    assert set(seen) == set(range(10))
    for crops in batches:
        for singer in {c.label for c in crops}:
            tracks = [c.track for c in crops if c.label == singer]
            assert len(set(tracks)) == min(3, 1 if singer == 9 else 3)  # different tracks where possible
    for c in (c for crops in batches for c in crops):
        assert 0 <= c.start <= 400 + 10 * c.track - 350


def test_seeded_per_epoch() -> None:
    a, b = make_sampler(), make_sampler()
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(make_sampler(seed=2)) != list(a)


def test_ranks_split_each_global_batch_without_repeats() -> None:
    whole = list(make_sampler())
    ranks = [list(make_sampler(rank=r, world_size=2)) for r in range(2)]
    for step, crops in enumerate(whole):
        assert ranks[0][step] + ranks[1][step] == crops
        assert not {c.label for c in ranks[0][step]} & {c.label for c in ranks[1][step]}
    with pytest.raises(ValueError, match="divisible"):
        make_sampler(world_size=3)


def test_passes_and_small_catalogs() -> None:
    sampler = make_sampler(singers=50, passes=2)  # N is capped at the number of singers
    batches = list(sampler)
    assert sampler.singers == 10 and len(batches) == 2
    counts = Counter(c.label for crops in batches for c in crops[::3])
    assert counts == {s: 2 for s in range(10)}
    assert np.all([len({c.label for c in crops}) == 10 for crops in batches])
