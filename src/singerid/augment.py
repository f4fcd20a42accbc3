"""Training augmentations of log-mel crops, made from the feature store alone (no second pass over the audio).

A crop is (frames, n_mels) float32 natural-log mel power, log(mel + log_floor) (`singerid.features`). Each
augmentation is a function of a crop and explicit strengths; `Augmenter` draws which apply to a crop, and how
strongly, from the probabilities and ranges of the config's `augment:` section and a seed per crop, in the order
of a recording chain: reverberation of the voice, accompaniment mixed in, an equaliser curve, a gain, then the
SpecAugment masks.

Mixing adds powers in the mel domain, log(exp(v) + g exp(a)): the power spectra of two independent signals add
in expectation (the cross term has zero mean), and a mel band sums the power of several FFT bins, which averages
the cross term further; only the few narrow low bands keep some of the interference that true mixing of the
waveforms would show. It needs no audio, which the store no longer holds. The equaliser and gain add a constant
in log space, which scales log_floor with the power (negligible outside bins at the floor).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from singerid.config import AugmentConfig
from singerid.store import FeatureStore

DB = math.log(10) / 10  # natural-log units per dB of power
RIPPLES = 2  # cosine ripples of the equaliser curve besides its slope


def mix(voice: np.ndarray, accompaniment: np.ndarray, snr_db: float) -> np.ndarray:
    """log(exp(voice) + g exp(accompaniment)), g such that the crop's voice-to-accompaniment power ratio (summed
    over its frames and bins) is `snr_db`."""
    ratio = np.exp(voice, dtype=np.float64).sum() / np.exp(accompaniment, dtype=np.float64).sum()
    scale = math.log(ratio) - snr_db * DB
    return np.logaddexp(voice, accompaniment + np.float32(scale)).astype(np.float32)


def eq_curve(n_mels: int, slope_db: float, ripples_db: Sequence[float] = ()) -> np.ndarray:
    """A smooth curve in dB over the mel bins: a line from -slope_db/2 (lowest bin) to +slope_db/2 (highest), plus
    ripples r_k cos(2 pi k x) (x from 0 to 1), which are symmetric about the middle and so leave the balance between
    the lowest and highest bins to the slope."""
    x = np.linspace(0.0, 1.0, n_mels)
    curve = slope_db * (x - 0.5)
    for k, ripple in enumerate(ripples_db, start=1):
        curve += ripple * np.cos(2 * np.pi * k * x)
    return curve.astype(np.float32)


def equalize(crop: np.ndarray, curve_db: np.ndarray) -> np.ndarray:
    """The crop through an equaliser of `curve_db` per mel bin."""
    return crop + curve_db * np.float32(DB)


def gain(crop: np.ndarray, db: float) -> np.ndarray:
    """The crop `db` louder."""
    return crop + np.float32(db * DB)


def time_mask(crop: np.ndarray, start: int, width: int) -> np.ndarray:
    """Frames [start, start + width) set to the crop's mean."""
    masked = crop.copy()
    masked[start : start + width] = crop.mean()
    return masked


def freq_mask(crop: np.ndarray, start: int, width: int) -> np.ndarray:
    """Mel bins [start, start + width) set to the crop's mean."""
    masked = crop.copy()
    masked[:, start : start + width] = crop.mean()
    return masked


def reverb(crop: np.ndarray, rt60: float, frame_seconds: float) -> np.ndarray:
    """Mel power smeared forward in time by an exponential decay of reverberation time `rt60` (power down 60 dB
    after rt60 seconds): p'[t] = (1 - a) p[t] + a p'[t - 1], a = 10^(-6 frame_seconds / rt60). The filter sums to
    one, so a steady sound keeps its level; before the first frame the crop is taken as steady at its first frame
    (a crop cut from a longer track has no silence before it)."""
    decay = 10 ** (-6 * frame_seconds / rt60)
    power = np.exp(crop, dtype=np.float64)
    smeared, _ = lfilter([1 - decay], [1, -decay], power, axis=0, zi=decay * power[:1])
    return np.log(smeared).astype(np.float32)


class Augmenter:
    """Applies the augmentations of `config` to training crops, each with its probability, from a seed per crop
    (so a batch repeats exactly, in any data-loader worker, on resume). Mixing takes its accompaniment from the
    banks of `tracks` (the training tracks) of other singers; a store without banks skips it, with a warning."""

    def __init__(self, config: AugmentConfig, store: FeatureStore, tracks: Sequence[int], frame_seconds: float) -> None:
        self.config, self.store, self.frame_seconds = config, store, frame_seconds
        # tracks with a bank, grouped by singer: a singer's own tracks are one run of this list
        banked = sorted((store.tracks[t].singer_id, t) for t in tracks if store.tracks[t].bank_frames)
        self.bank_tracks = [t for _, t in banked]
        self.singer_runs: dict[str, tuple[int, int]] = {}
        for i, (singer, _) in enumerate(banked):
            first, _ = self.singer_runs.get(singer, (i, i))
            self.singer_runs[singer] = (first, i + 1)
        if config.mix and not self.bank_tracks:
            warnings.warn(
                f"{store.folder}: no track has an accompaniment bank (a store prepared before banks were kept); "
                "augment.mix is skipped. Prepare the store anew to mix.",
                stacklevel=2,
            )

    def __call__(self, crop: np.ndarray, track: int, seed: int) -> np.ndarray:
        """The crop of `track`, augmented as the seed draws."""
        config, rng = self.config, np.random.default_rng(seed)
        if rng.random() < config.reverb:
            crop = reverb(crop, float(rng.uniform(*config.reverb_seconds)), self.frame_seconds)
        if rng.random() < config.mix:
            other = self._other_singers_track(track, rng)
            if other is not None:
                accompaniment = self.store.random_bank_crop(other, len(crop), rng)
                crop = mix(crop, accompaniment, float(rng.uniform(*config.mix_snr_db)))
        if rng.random() < config.tilt:
            ripples = rng.uniform(-config.tilt_db / 4, config.tilt_db / 4, RIPPLES)
            crop = equalize(crop, eq_curve(crop.shape[1], float(rng.uniform(-config.tilt_db, config.tilt_db)), ripples))
        if rng.random() < config.gain:
            crop = gain(crop, float(rng.uniform(-config.gain_db, config.gain_db)))
        if rng.random() < config.time_mask:
            width = int(rng.integers(1, min(config.time_mask_frames, len(crop)) + 1))
            crop = time_mask(crop, int(rng.integers(0, len(crop) - width + 1)), width)
        if rng.random() < config.freq_mask:
            width = int(rng.integers(1, min(config.freq_mask_bins, crop.shape[1]) + 1))
            crop = freq_mask(crop, int(rng.integers(0, crop.shape[1] - width + 1)), width)
        return crop

    def _other_singers_track(self, track: int, rng: np.random.Generator) -> int | None:
        """A bank track of another singer than `track`'s, uniformly; None when there is none."""
        first, end = self.singer_runs.get(self.store.tracks[track].singer_id, (0, 0))
        others = len(self.bank_tracks) - (end - first)
        if others == 0:
            return None
        pick = int(rng.integers(others))
        return self.bank_tracks[pick + (end - first) if pick >= first else pick]
