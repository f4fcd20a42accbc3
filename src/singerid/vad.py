"""Vocal regions of a track: its lyric phrases when it has timed lyrics, else an unsupervised vocal-activity
detector keyed on the share of a separated vocal estimate in the mixture and on how fast the spectrum changes.

The detector decides from a few numbers per 10 ms frame, which `frame_features` computes from a signal given in
blocks of any size: the front end streams a file of any length through it in bounded memory, and
`detect_vocal_activity` does the same for a signal in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.fft
import scipy.ndimage

from singerid.audio import as_mono_float32
from singerid.features import FeatureConfig, centred_pieces, mel_filterbank
from singerid.lyrics import Lyrics
from singerid.separation import RepetSim

__all__ = [
    "FrameFeatures",
    "audible_regions",
    "detect_vocal_activity",
    "frame_features",
    "lyric_regions",
    "regions_from_features",
    "total_seconds",
    "vocal_regions",
]

HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.040  # >= 3 periods of the lowest F0, as in autocorrelation pitch trackers
VOICE_BAND_HZ = (150.0, 5000.0)
F0_RANGE_HZ = (80.0, 1000.0)
SILENCE_FLOOR_DB = -65.0  # band mean square re full scale; quieter frames are never voice
LOUD_RANGE_DB = 25.0  # frames within this range of the track's loud level always count as loud
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak of a voiced frame (singing alone)
# A track is accompanied when it is loud in this share of the frames between its first and last loud frame, and
# that span is long enough for a separator to find repetition in it; singing alone (a cappella, vocal exercises)
# pauses between phrases, and there loudness and harmonicity suffice.
ACCOMPANIED_COVERAGE = 0.85
ACCOMPANIED_MIN_SECONDS = 3.0
# Accompanied tracks: a frame's voice score is its vocal share (dB) plus FLUX_WEIGHT times its spectral flux (dB).
# The weight was set on two corpora (the project's synthesizer, and espeak-ng voices over sox accompaniment made
# by benchmarks/make_independent_catalog.py); results change little between 4 and 5.
FLUX_WEIGHT = 4.5
# The score threshold is Otsu's over the track's loud frames (which always splits them in two), kept within this
# range, set on the same corpora: an instrumental track keeps little, a track sung throughout most of its voice.
SCORE_RANGE_DB = (2.0, 8.0)
MIN_MEAN_HARMONICITY = 0.3  # over 210 ms: drums and noise stay below, singing (consonants included) above
FLUX_BANDS = 40  # mel bands over the voice band
FLUX_LAG_FRAMES = 2  # flux compares the bands 2 frames before and after (40 ms apart)
SMOOTHING_SECONDS = 0.11
LONG_SMOOTHING_SECONDS = 0.21  # spectral flux and mean harmonicity are averaged over this
_FRAMES_PER_CHUNK = 2048


class FrameFeatures(NamedTuple):
    """Per 10 ms frame of a signal (1 + samples // hop frames, centred, as the log-mel's)."""

    energy_db: np.ndarray  # voice-band energy, dB re full scale
    harmonicity: np.ndarray  # normalised autocorrelation peak in the F0 range, 0-1
    flux_db: np.ndarray  # mean absolute change (dB) of 40 voice-band mel energies from 20 ms before to 20 ms after


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


def _hop(sample_rate: int) -> int:
    return max(1, round(HOP_SECONDS * sample_rate))


def frame_features(blocks: Iterable[np.ndarray], sample_rate: int, *, energy_only: bool = False) -> FrameFeatures:
    """The `FrameFeatures` of the signal that consecutive mono float32 `blocks` make up, in the memory of a few
    thousand frames; with `energy_only`, harmonicity and flux are zeros (their cost is skipped)."""
    hop = _hop(sample_rate)
    window_length = 2 * max(2, round(WINDOW_SECONDS * sample_rate / 2))
    n_fft = scipy.fft.next_fast_len(2 * window_length, real=True)  # linear, not circular, autocorrelation
    window = np.hanning(window_length + 2)[1:-1].astype(np.float32)
    top_hz = min(VOICE_BAND_HZ[1], 0.45 * sample_rate)
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (frequencies >= VOICE_BAND_HZ[0]) & (frequencies <= top_hz)
    envelope_bins = max(3, round(1200.0 / (sample_rate / n_fft)))
    # one-sided power in the band -> mean square of the band-passed signal
    power_scale = 2.0 / (n_fft * float(np.sum(window**2)))
    window_autocorr = scipy.fft.irfft(np.abs(scipy.fft.rfft(window, n_fft)) ** 2, n_fft)
    lag_low = max(1, math.floor(sample_rate / F0_RANGE_HZ[1]))
    lag_high = min(window_length - 1, math.ceil(sample_rate / F0_RANGE_HZ[0]))
    lags = slice(lag_low - 1, lag_high + 2)
    window_norm = window_autocorr[lags] / window_autocorr[0]
    mel_config = FeatureConfig(sample_rate, n_fft, window_length, hop, FLUX_BANDS, VOICE_BAND_HZ[0], top_hz)
    mel_matrix = mel_filterbank(mel_config).T * np.float32(power_scale)

    energies: list[np.ndarray] = []
    harmonicities: list[np.ndarray] = []
    changes: list[np.ndarray] = []  # |bands(t) - bands(t - 2 lags)|, frame t >= 2 lags
    previous = np.zeros((0, FLUX_BANDS), np.float32)  # the last bands of the previous piece
    for piece in centred_pieces(blocks, window_length, hop, _FRAMES_PER_CHUNK):
        chunk = np.lib.stride_tricks.sliding_window_view(piece, window_length)[::hop] * window
        power = np.abs(scipy.fft.rfft(chunk, n_fft, axis=1)) ** 2
        power[:, ~band] = 0.0
        energies.append(10 * np.log10(power.sum(axis=1) * power_scale + 1e-12))
        if energy_only:
            continue
        bands = np.concatenate([previous, 10 * np.log10(power @ mel_matrix + 1e-9)])
        changes.append(np.abs(bands[2 * FLUX_LAG_FRAMES :] - bands[: -2 * FLUX_LAG_FRAMES]).mean(axis=1))
        previous = bands[-2 * FLUX_LAG_FRAMES :]
        # half whitening: divide by the square root of the spectral envelope (smoothed wider than the harmonic
        # spacing), so that steep noise spectra look less periodic while a harmonic comb keeps its peaks
        envelope = scipy.ndimage.uniform_filter1d(power, envelope_bins, axis=1, mode="nearest")
        whitened = power / (np.sqrt(np.maximum(envelope, 0.0)) + 1e-20)
        autocorr = scipy.fft.irfft(whitened, n_fft, axis=1)
        normalised = autocorr[:, lags] / np.maximum(autocorr[:, :1], 1e-20) / window_norm
        # only interior local maxima count: a low-pass spectrum decays from lag 0 without a peak
        inner = normalised[:, 1:-1]
        is_peak = (inner >= normalised[:, :-2]) & (inner >= normalised[:, 2:])
        harmonicities.append(np.where(is_peak, inner, 0.0).max(axis=1))
    energy_db = np.concatenate(energies).astype(np.float64)
    if energy_only:
        return FrameFeatures(energy_db, np.zeros_like(energy_db), np.zeros_like(energy_db))
    flux_db = np.zeros_like(energy_db)
    change = np.concatenate(changes)
    flux_db[FLUX_LAG_FRAMES : FLUX_LAG_FRAMES + len(change)] = change  # centred on the frame between the two
    return FrameFeatures(energy_db, np.concatenate(harmonicities).astype(np.float64), flux_db)


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

    `vocals` is a separated vocal estimate of `wave` (REPET-SIM's when not given); see `regions_from_features`
    for the method. Expects a float signal in [-1, 1] (integer samples are scaled); any sample rate, 16 kHz
    intended.
    """
    samples = as_mono_float32(wave, sample_rate)
    if vocals is not None:
        vocals = as_mono_float32(vocals, sample_rate)
        if vocals.shape != samples.shape:
            raise ValueError(f"vocals has shape {vocals.shape}, the mixture {samples.shape}")
    duration = len(samples) / sample_rate
    if duration < min_region or not np.any(samples):
        return []

    def vocal_energy_db() -> np.ndarray:
        if vocals is not None:
            return frame_features([vocals], sample_rate, energy_only=True).energy_db
        estimate = RepetSim().separate_blocks(lambda: [samples], sample_rate, len(samples))
        return frame_features(estimate, sample_rate, energy_only=True).energy_db

    features = frame_features([samples], sample_rate)
    return regions_from_features(
        features, vocal_energy_db, sample_rate, duration, min_region=min_region, min_gap=min_gap
    )


def regions_from_features(
    features: FrameFeatures,
    vocal_energy_db: Callable[[], np.ndarray],
    sample_rate: int,
    duration: float,
    *,
    min_region: float = 0.5,
    min_gap: float = 0.3,
) -> list[tuple[float, float]]:
    """Sung regions (start, end) in seconds from the `frame_features` of a mixture of `duration` seconds at
    `sample_rate`; `vocal_energy_db()` gives the voice-band energy per frame of a separated vocal estimate of it
    (called only for an accompanied track).

    Features (40 ms Hann frames at a 10 ms hop): the log energy in the voice band 150 Hz-5 kHz; the harmonicity,
    the highest interior peak, at lags of F0 80-1000 Hz, of the autocorrelation of the band-limited,
    half-whitened spectrum (power over the square root of its 1.2 kHz-smoothed envelope, so coloured noise does
    not pass as periodic), normalised by lag 0 and by the window's own autocorrelation (Boersma 1993); and the
    spectral flux, the mean change in dB of 40 mel-band energies over 40 ms.

    A frame is loud when its energy is above the silence floor (-65 dB) and above the lower of Otsu's threshold
    over the track's energies and the track's loud level (95th percentile) minus 25 dB. Singing alone (loud in
    less than 85 % of the span between the first and last loud frame, or a span under 3 s): a loud frame is sung
    when harmonic (> 0.45). Accompanied: harmonic accompaniment is as loud and as periodic as a voice, so two
    other cues decide. The vocal share, the estimate's energy re the mixture's (median over 110 ms), is low where
    the separator takes the sound for repeating background. The spectral flux (mean over 210 ms) is high where
    the spectrum keeps changing, as the formants of sung syllables do, and low in held chords; it carries the
    decision where the separator has little repetition to go by (short tracks, varied accompaniment) or where
    the voice repeats too (a looped track). A loud frame is sung when its score, vocal share + 4.5 x flux (dB),
    reaches Otsu's threshold over the track's loud frames kept within 2-8 dB, and its harmonicity averaged over
    210 ms is above 0.3 (not drums or noise). The decision is median-smoothed over 110 ms, gaps shorter than
    `min_gap` are closed and regions shorter than `min_region` dropped.
    """
    energy_db, harmonicity, flux_db = features
    if duration < min_region or duration == 0:
        return []
    audible = energy_db > SILENCE_FLOOR_DB
    if not np.any(audible):
        return []
    frame_seconds = _hop(sample_rate) / sample_rate
    smoothing = max(1, round(SMOOTHING_SECONDS / HOP_SECONDS)) | 1
    long_smoothing = max(1, round(LONG_SMOOTHING_SECONDS / HOP_SECONDS)) | 1
    loud_level = float(np.percentile(energy_db[audible], 95))
    loud = audible & (energy_db > min(_otsu_threshold(energy_db), loud_level - LOUD_RANGE_DB))
    loud_frames = np.flatnonzero(loud)
    loud_span = loud[loud_frames[0] : loud_frames[-1] + 1]
    if loud_span.mean() < ACCOMPANIED_COVERAGE or len(loud_span) * frame_seconds < ACCOMPANIED_MIN_SECONDS:
        singing = loud & (harmonicity > VOICING_THRESHOLD)
    else:
        share = scipy.ndimage.median_filter(vocal_energy_db() - energy_db, size=smoothing)
        score = share + FLUX_WEIGHT * scipy.ndimage.uniform_filter1d(flux_db, long_smoothing)
        threshold = float(np.clip(_otsu_threshold(score[loud]), *SCORE_RANGE_DB))
        harmonic = scipy.ndimage.uniform_filter1d(harmonicity, long_smoothing) > MIN_MEAN_HARMONICITY
        singing = loud & harmonic & (score >= threshold)
    singing = scipy.ndimage.median_filter(singing.astype(np.uint8), size=smoothing, mode="nearest") > 0

    starts, ends = _regions_from_mask(singing)
    if len(starts) == 0:
        return []
    start_times = np.clip(starts * frame_seconds, 0.0, duration)
    end_times = np.clip(ends * frame_seconds, 0.0, duration)
    keep_boundary = start_times[1:] - end_times[:-1] >= min_gap
    start_times = start_times[np.concatenate([[True], keep_boundary])]
    end_times = end_times[np.concatenate([keep_boundary, [True]])]
    long_enough = end_times - start_times >= min_region
    return [(float(s), float(e)) for s, e in zip(start_times[long_enough], end_times[long_enough], strict=True)]


def audible_regions(energy_db: np.ndarray, sample_rate: int, duration: float) -> list[tuple[float, float]]:
    """The runs of frames above the silence floor, from `frame_features` energies: a track's non-silent parts."""
    hop = _hop(sample_rate) / sample_rate
    starts, ends = _regions_from_mask(energy_db > SILENCE_FLOOR_DB)
    return [(float(min(s * hop, duration)), float(min(e * hop, duration))) for s, e in zip(starts, ends, strict=True)]


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


def lyric_regions(lyrics: Lyrics, duration: float) -> list[tuple[float, float]]:
    """The lyric phrases of a track of `duration` seconds as regions: touching ones joined, cut to the track."""
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


def vocal_regions(
    wave: np.ndarray,
    sample_rate: int,
    lyrics: Lyrics | None = None,
    *,
    vocals: np.ndarray | None = None,
    **detector_options: float,
) -> list[tuple[float, float]]:
    """Vocal regions of one track: its `lyric_regions` when it has lyric phrases, else
    `detect_vocal_activity(wave, sample_rate, vocals=vocals, **detector_options)`."""
    if lyrics is None or not lyrics.phrases:
        return detect_vocal_activity(wave, sample_rate, vocals=vocals, **detector_options)
    return lyric_regions(lyrics, len(wave) / sample_rate)
