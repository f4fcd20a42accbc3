"""Training augmentations of log-mel crops (singerid.augment): each does what it says on a real crop, probability 0
is the identity, a seed repeats its draw, and training with them resumes exactly."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from singerid.augment import Augmenter, eq_curve, equalize, freq_mask, gain, mix, reverb, time_mask
from singerid.checkpoint import load_checkpoint
from singerid.config import AugmentConfig, ConfigError, load_config
from singerid.sampler import CropDataset, SingerBatchSampler
from singerid.store import FeatureStore
from singerid.train import train, training_singers

LEGACY = Path(__file__).parent / "fixtures" / "d045454"
DB = 10 / math.log(10)  # dB per natural-log unit of power
ALL_ON = AugmentConfig(mix=1.0, tilt=1.0, gain=1.0, time_mask=1.0, freq_mask=1.0, reverb=1.0)


@pytest.fixture(scope="module")
def store(quick_store: Path) -> FeatureStore:
    return FeatureStore(quick_store)


def voice_crop(store: FeatureStore, track: int = 0) -> np.ndarray:
    return store.crop(track, 0, 200)


def test_mix_adds_the_accompaniment_at_the_asked_ratio(store: FeatureStore) -> None:
    voice = voice_crop(store)
    other = next(i for i, t in enumerate(store.tracks) if t.singer_id != store.tracks[0].singer_id)
    accompaniment = store.random_bank_crop(other, len(voice), np.random.default_rng(0))
    mixed = mix(voice, accompaniment, snr_db=5.0)
    added = np.exp(mixed.astype(np.float64)) - np.exp(voice.astype(np.float64))
    assert 10 * math.log10(np.exp(voice.astype(np.float64)).sum() / added.sum()) == pytest.approx(5.0, abs=0.01)
    assert (mixed >= voice - 1e-5).all()
    # where the scaled accompaniment is louder than the voice, the mix is more than 3 dB above the voice; elsewhere less
    scaled = accompaniment + math.log(
        np.exp(voice, dtype=np.float64).sum() / np.exp(accompaniment, dtype=np.float64).sum()
    )
    louder = scaled - 5.0 / DB > voice
    assert 0 < louder.mean() < 1
    assert ((mixed - voice)[louder] > math.log(2)).all() and ((mixed - voice)[~louder] <= math.log(2) + 1e-5).all()


def test_tilt_changes_the_balance_of_high_and_low_bins_by_the_asked_db(store: FeatureStore) -> None:
    crop = voice_crop(store)
    curve = eq_curve(64, slope_db=6.0, ripples_db=[1.5, -1.0])
    change = (equalize(crop, curve) - crop) * DB
    np.testing.assert_allclose(change, np.broadcast_to(change[0], change.shape), atol=1e-4)  # same in every frame
    assert change[0, -1] - change[0, 0] == pytest.approx(6.0, abs=1e-3)  # the ripples leave the edges' balance
    assert change[0, 48:].mean() - change[0, :16].mean() == pytest.approx(6.0 * 48 / 63, abs=1e-3)
    assert np.abs(np.diff(curve)).max() < 1.0  # smooth: under 1 dB from bin to bin
    assert not np.allclose(curve, eq_curve(64, 6.0))  # the ripples shape it


def test_gain_shifts_the_log_mel_by_the_asked_db(store: FeatureStore) -> None:
    crop = voice_crop(store)
    np.testing.assert_allclose((gain(crop, -4.5) - crop) * DB, -4.5, atol=1e-4)


def test_masks_fill_the_asked_frames_and_bins_with_the_mean(store: FeatureStore) -> None:
    crop = voice_crop(store)
    masked = time_mask(crop, 30, 25)
    np.testing.assert_allclose(masked[30:55], crop.mean())
    np.testing.assert_array_equal(np.delete(masked, np.s_[30:55], axis=0), np.delete(crop, np.s_[30:55], axis=0))
    masked = freq_mask(crop, 10, 6)
    np.testing.assert_allclose(masked[:, 10:16], crop.mean())
    np.testing.assert_array_equal(np.delete(masked, np.s_[10:16], axis=1), np.delete(crop, np.s_[10:16], axis=1))


def test_reverb_spreads_an_impulse_forward_only_decaying_60_db_per_rt60() -> None:
    quiet = math.log(1e-12)
    crop = np.full((200, 64), quiet, np.float32)
    crop[50] = 0.0  # power 1 in every bin
    smeared = reverb(crop, rt60=0.4, frame_seconds=0.01)
    np.testing.assert_allclose(smeared[:50], quiet, atol=1e-5)  # nothing before the impulse
    excess = np.exp(smeared[50:, 0].astype(np.float64)) - 1e-12
    assert (np.diff(excess[:50]) < 0).all()  # a decaying tail after it
    assert 10 * math.log10(excess[0] / excess[40]) == pytest.approx(60.0, abs=0.1)  # RT60 = 40 frames
    # the filter sums to one: the power of the impulse is spread, not added
    total = np.exp(smeared.astype(np.float64)).sum(axis=0) - 200 * 1e-12
    assert total[0] == pytest.approx(1.0, rel=1e-3)
    steady = np.full((100, 64), -3.0, np.float32)  # a steady crop stays as it is
    np.testing.assert_allclose(reverb(steady, 0.8, 0.01), steady, atol=1e-5)


def test_probability_zero_is_the_identity_and_a_seed_repeats_its_draw(store: FeatureStore) -> None:
    tracks = list(range(len(store)))
    crop = voice_crop(store)
    off = Augmenter(AugmentConfig(), store, tracks, 0.01)
    for seed in range(20):
        np.testing.assert_array_equal(off(crop, 0, seed), crop)
    on = Augmenter(ALL_ON, store, tracks, 0.01)
    np.testing.assert_array_equal(on(crop, 0, 7), on(crop, 0, 7))
    assert not np.array_equal(on(crop, 0, 7), on(crop, 0, 8))
    assert not np.allclose(on(crop, 0, 7), crop)
    for name in ("mix", "tilt", "gain", "time_mask", "freq_mask", "reverb"):  # each alone changes the crop
        alone = Augmenter(replace(AugmentConfig(), **{name: 1.0}), store, tracks, 0.01)
        assert not np.allclose(alone(crop, 0, 3), crop), name


def test_mixing_takes_accompaniment_of_other_singers_only(store: FeatureStore, monkeypatch) -> None:
    augmenter = Augmenter(AugmentConfig(mix=1.0), store, list(range(len(store))), 0.01)
    drawn: list[int] = []
    real = store.random_bank_crop
    monkeypatch.setattr(store, "random_bank_crop", lambda track, *args: drawn.append(track) or real(track, *args))
    for seed in range(200):
        augmenter(voice_crop(store), 0, seed)
    singer = store.tracks[0].singer_id
    assert len(drawn) == 200 and all(store.tracks[t].singer_id != singer for t in drawn)
    assert len({store.tracks[t].singer_id for t in drawn}) == len({t.singer_id for t in store.tracks}) - 1
    alone = Augmenter(
        AugmentConfig(mix=1.0), store, [i for i, t in enumerate(store.tracks) if t.singer_id == singer], 0.01
    )
    np.testing.assert_array_equal(alone(voice_crop(store), 0, 1), voice_crop(store))  # no other singer: no mix


def test_augmented_batches_repeat_by_seed_and_epoch_whatever_the_processes(store: FeatureStore) -> None:
    """What resume relies on: the augmented batches of an epoch depend on (seed, epoch) only, not on the epochs
    before nor on how many processes share a batch."""
    _, singer_tracks = training_singers(store)
    frames = [t.frames for t in store.tracks]
    dataset = CropDataset(store, 100, Augmenter(ALL_ON, store, [t for s in singer_tracks for t in s], 0.01))

    def batches(epoch: int, rank: int = 0, world: int = 1, warm: bool = False) -> list[torch.Tensor]:
        sampler = SingerBatchSampler(singer_tracks, frames, 4, 2, 100, seed=3, rank=rank, world_size=world)
        if warm:  # go through an earlier epoch first
            sampler.set_epoch(0)
            list(sampler)
        sampler.set_epoch(epoch)
        return [dataset[crops][0] for crops in sampler]

    first = batches(1)
    for again in (batches(1, warm=True), [torch.cat(pair) for pair in zip(batches(1, 0, 2), batches(1, 1, 2))]):
        assert len(again) == len(first) and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], batches(2)[0])
    plain = CropDataset(store, 100)
    sampler = SingerBatchSampler(singer_tracks, frames, 4, 2, 100, seed=3)
    crops = next(iter(sampler))
    assert not torch.equal(plain[crops][0], dataset[crops][0])


def test_training_with_augmentation_resumes_exactly(quick_store: Path, tmp_path: Path) -> None:
    on = ["augment.mix=0.5", "augment.tilt=0.5", "augment.reverb=0.5", "augment.time_mask=0.5", "augment.freq_mask=0.5"]
    fast = [*TINY, "batch.crop_frames=100", "loss.name=triplet", "train.validate_every=0", *on]
    train(quick_store, tmp_path / "straight", load_config(None, [*fast, "train.epochs=2"]), progress=False)
    train(quick_store, tmp_path / "resumed", load_config(None, [*fast, "train.epochs=1"]), progress=False)
    train(quick_store, tmp_path / "resumed", load_config(None, [*fast, "train.epochs=2"]), resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a.config.augment.mix == 0.5 and a.step == b.step == 2
    for key, value in a.model.items():
        assert torch.equal(value, b.model[key]), key


def test_a_store_without_banks_trains_with_mixing_skipped_and_one_warning(tmp_path: Path) -> None:
    assert not FeatureStore(LEGACY / "store").has_bank
    settings = [
        "model.channels=[4,8,16,32]",
        "model.blocks=[1,1,1,1]",
        "model.embedding_dim=16",
        "train.workers=0",
        "train.epochs=1",
        "batch.singers=2",
        "batch.crop_frames=100",
        "train.validate_every=1",
        "augment.mix=0.5",
    ]
    with pytest.warns(UserWarning, match="no track has an accompaniment bank") as caught:
        result = train(LEGACY / "store", tmp_path / "run", load_config(None, settings), progress=False)
    assert result.epochs == 1 and sum("accompaniment bank" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.mixing=0.5", "unknown key 'augment.mixing'; did you mean 'mix'"),
        ("augment.mix=1.5", "augment.mix is a probability"),
        ("augment.reverb=-0.1", "augment.reverb is a probability"),
        ("augment.mix_snr_db=[15, 0]", "low <= high"),
        ("augment.mix_snr_db=[0, 5, 10]", "low <= high"),
        ("augment.reverb_seconds=[0, 1]", "reverb_seconds must be > 0"),
        ("augment.time_mask_frames=0", "time_mask_frames must be >= 1"),
        ("augment.tilt_db=loud", "'augment.tilt_db' must be like 6.0"),
    ],
)
def test_augment_keys_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_shipped_configs_augment_only_where_measured() -> None:
    """Only configs/cpu.yaml mixes in accompaniment (measured on an independent catalog); the rest augment nothing."""
    from singerid.config import SHIPPED, AugmentConfig

    for path in SHIPPED.rglob("*.yaml"):
        expected = AugmentConfig(mix=0.5) if path.name == "cpu.yaml" else AugmentConfig()
        assert load_config(path).augment == expected, path
    assert load_config(None, ["augment.mix_snr_db=[-5, 5]"]).augment.mix_snr_db == (-5.0, 5.0)
