"""Vocal regions of a track: its lyric phrases when it has timed lyrics, else an unsupervised vocal-activity
detector keyed on the share of a separated vocal estimate in the mixture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.ndimage

from singerid.audio import as_mono_float32
from singerid.lyrics import Lyrics
from singerid.separation import RepetSim

__all__ = ["detect_vocal_activity", "total_seconds", "vocal_regions"]

HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.040  # >= 3 periods of the lowest F0, as in autocorrelation pitch trackers
VOICE_BAND_HZ = (150.0, 5000.0)
F0_RANGE_HZ = (80.0, 1000.0)
SILENCE_FLOOR_DB = -65.0  # band mean square re full scale; quieter frames are never voice
LOUD_RANGE_DB = 25.0  # frames within this range of the track's loud level always count as loud
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak of a voiced frame
# Voice-band energy of the separated vocal estimate re the mixture's: -5 dB means the estimate holds about a third
# of the energy. Accompaniment alone, which the separator takes as background, stays well below it.
VOCAL_SHARE_DB = -5.0
# A track is accompanied when it is loud in this share of the frames between its first and last loud frame;
# singing alone (a cappella, vocal exercises) pauses between phrases, and there the share is not needed: a
# separator would take a sustained or repeated note for background.
ACCOMPANIED_COVERAGE = 0.85
# ... and when the share keeps at least this fraction of the loud, harmonic frames; less means the separator took
# the voice itself for background (one long note), and the share is not used either.
MIN_VOICED_FRACTION = 0.25
SMOOTHING_SECONDS = 0.11
_FRAMES_PER_CHUNK = 4096


def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of a 1-D sample."""
    hist, edges = np.histogram(values, bins=128)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)[:-1].astype(np.float64)
    weight_high = hist.sum() - weight_low
    sum_low = np.cumsum(hist * centers)[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = ((hist * centers).sum() - sum_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _frame_features(wave: np.ndarray, sample_rate: int, with_harmonicity: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms frame: voice-band log energy (dB re full scale) and harmonicity (autocorrelation peak; zeros
    when not `with_harmonicity`, which skips its cost)."""
    hop = max(1, round(HOP_SECONDS * sample_rate))
    window_length = max(4, round(WINDOW_SECONDS * sample_rate))
    n_fft = scipy.fft.next_fast_len(2 * window_length, real=True)  # linear, not circular, autocorrelation
    padded = np.pad(wave, (window_length // 2, window_length // 2))
    n_frames = 1 + max(0, len(padded) - window_length) // hop
    if len(padded) < window_length:
        padded = np.pad(padded, (0, window_length - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, window_length)[::hop][:n_frames]

    window = np.hanning(window_length + 2)[1:-1].astype(np.float32)
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (frequencies >= VOICE_BAND_HZ[0]) & (frequencies <= min(VOICE_BAND_HZ[1], 0.45 * sample_rate))
    envelope_bins = max(3, round(1200.0 / (sample_rate / n_fft)))
    # one-sided power in the band -> mean square of the band-passed signal
    power_scale = 2.0 / (n_fft * float(np.sum(window**2)))
    window_autocorr = scipy.fft.irfft(np.abs(scipy.fft.rfft(window, n_fft)) ** 2, n_fft)
    lag_low = max(1, math.floor(sample_rate / F0_RANGE_HZ[1]))
    lag_high = min(window_length - 1, math.ceil(sample_rate / F0_RANGE_HZ[0]))
    lags = slice(lag_low - 1, lag_high + 2)
    window_norm = window_autocorr[lags] / window_autocorr[0]

    energy_db = np.empty(n_frames)
    harmonicity = np.zeros(n_frames)
    for first in range(0, n_frames, _FRAMES_PER_CHUNK):
        chunk = frames[first : first + _FRAMES_PER_CHUNK] * window
        power = np.abs(scipy.fft.rfft(chunk, n_fft, axis=1)) ** 2
        power[:, ~band] = 0.0
        energy_db[first : first + len(chunk)] = 10 * np.log10(power.sum(axis=1) * power_scale + 1e-12)
        if not with_harmonicity:
            continue
        # half whitening: divide by the square root of the spectral envelope (smoothed wider than the harmonic
        # spacing), so that steep noise spectra look less periodic while a harmonic comb keeps its peaks
        envelope = scipy.ndimage.uniform_filter1d(power, envelope_bins, axis=1, mode="nearest")
        whitened = power / (np.sqrt(np.maximum(envelope, 0.0)) + 1e-20)
        autocorr = scipy.fft.irfft(whitened, n_fft, axis=1)
        normalised = autocorr[:, lags] / np.maximum(autocorr[:, :1], 1e-20) / window_norm
        # only interior local maxima count: a low-pass spectrum decays from lag 0 without a peak
        inner = normalised[:, 1:-1]
        is_peak = (inner >= normalised[:, :-2]) & (inner >= normalised[:, 2:])
        harmonicity[first : first + len(chunk)] = np.where(is_peak, inner, 0.0).max(axis=1)
    return energy_db, harmonicity


def _regions_from_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in a boolean vector."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def detect_vocal_activity(
    wave: np.ndarray,
    sample_rate: int,
    *,
    vocals: np.ndarray | None = None,
    min_region: float = 0.5,
    min_gap: float = 0.3,
) -> list[tuple[float, float]]:
    """Sung regions (start, end) in seconds of a mono mixture, found without lyrics or training.

    Harmonic accompaniment (piano, guitar, strings) is as loud and as periodic as a voice, so loudness and
    periodicity alone mark nearly a whole song as sung. The deciding cue is the share of the voice in the
    mixture: `vocals` is a separated vocal estimate of `wave` (REPET-SIM's when not given); a frame can only be
    sung where the estimate holds at least VOCAL_SHARE_DB (-5 dB) of the mixture's voice-band energy, which
    the repeating accompaniment of an intro or interlude does not.

    Method: 40 ms Hann frames at a 10 ms hop. Per frame, (1) the log energy in the voice band 150 Hz-5 kHz of
    the mixture and of the vocal estimate, (2) the harmonicity of the mixture: the highest interior peak, at
    lags of F0 80-1000 Hz, of the autocorrelation of the band-limited, half-whitened spectrum (power over the
    square root of its 1.2 kHz-smoothed envelope, so coloured noise does not pass as periodic), normalised by
    lag 0 and by the window's own autocorrelation (Boersma 1993). A frame is loud when its energy is above the
    silence floor (-65 dB) and above the lower of Otsu's threshold over the track's energies and the track's
    loud level (95th percentile) minus 25 dB. A frame is singing when loud, harmonic (> 0.45; noise stays
    near 0) and its vocal share (median over 110 ms) is at least -5 dB. The decision is median-smoothed over
    110 ms, gaps shorter than `min_gap` are closed and regions shorter than `min_region` dropped. Expects a
    float signal in [-1, 1] (integer samples are scaled); any sample rate, 16 kHz intended.
    """
    samples = as_mono_float32(wave, sample_rate)
    duration = len(samples) / sample_rate
    if duration < min_region or duration == 0 or not np.any(samples):
        return []

    energy_db, harmonicity = _frame_features(samples, sample_rate)
    audible = energy_db > SILENCE_FLOOR_DB
    if not np.any(audible):
        return []
    smoothing = max(1, round(SMOOTHING_SECONDS / HOP_SECONDS)) | 1
    loud_level = float(np.percentile(energy_db[audible], 95))
    loud = audible & (energy_db > min(_otsu_threshold(energy_db), loud_level - LOUD_RANGE_DB))
    singing = loud & (harmonicity > VOICING_THRESHOLD)
    loud_frames = np.flatnonzero(loud)
    if loud[loud_frames[0] : loud_frames[-1] + 1].mean() >= ACCOMPANIED_COVERAGE:
        if vocals is None:
            vocals = RepetSim().separate(samples, sample_rate)
        vocals = as_mono_float32(vocals, sample_rate)
        if vocals.shape != samples.shape:
            raise ValueError(f"vocals has shape {vocals.shape}, the mixture {samples.shape}")
        vocal_energy_db, _ = _frame_features(vocals, sample_rate, with_harmonicity=False)
        share = scipy.ndimage.median_filter(vocal_energy_db - energy_db, size=smoothing)
        voiced = singing & (share >= VOCAL_SHARE_DB)
        if voiced.sum() >= MIN_VOICED_FRACTION * singing.sum():
            singing = voiced
    singing = scipy.ndimage.median_filter(singing.astype(np.uint8), size=smoothing, mode="nearest") > 0

    starts, ends = _regions_from_mask(singing)
    if len(starts) == 0:
        return []
    hop = max(1, round(HOP_SECONDS * sample_rate)) / sample_rate
    start_times = np.clip(starts * hop, 0.0, duration)
    end_times = np.clip(ends * hop, 0.0, duration)
    keep_boundary = start_times[1:] - end_times[:-1] >= min_gap
    start_times = start_times[np.concatenate([[True], keep_boundary])]
    end_times = end_times[np.concatenate([keep_boundary, [True]])]
    long_enough = end_times - start_times >= min_region
    return [(float(s), float(e)) for s, e in zip(start_times[long_enough], end_times[long_enough], strict=True)]


def total_seconds(regions: Sequence[tuple[float, float]]) -> float:
    """Length of the union of (start, end) regions in seconds; overlaps count once."""
    total = 0.0
    covered_until = -math.inf
    for start, end in sorted(regions):
        if end < start:
            raise ValueError(f"region ends before it starts: ({start}, {end})")
        if end > covered_until:
            total += end - max(start, covered_until)
            covered_until = end
    return total


def vocal_regions(
    wave: np.ndarray,
    sample_rate: int,
    lyrics: Lyrics | None = None,
    *,
    vocals: np.ndarray | None = None,
    **detector_options: float,
) -> list[tuple[float, float]]:
    """Vocal regions of one track: its lyric phrases (touching ones joined, cut to the signal) when there
    are any, else `detect_vocal_activity(wave, sample_rate, vocals=vocals, **detector_options)`."""
    if lyrics is None or not lyrics.phrases:
        return detect_vocal_activity(wave, sample_rate, vocals=vocals, **detector_options)
    duration = len(wave) / sample_rate
    regions: list[tuple[float, float]] = []
    for start, end in lyrics.regions:
        end = min(end, duration)
        if end <= start:
            continue
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
        else:
            regions.append((start, end))
    return regions
