"""Vocal regions of a track: LRC lyric phrases when there are lyrics, else an unsupervised activity detector.

`read_lrc` / `parse_lrc` turn time-stamped lyrics into sorted, non-overlapping `Phrase` intervals; malformed
lines are skipped and counted, never fatal. `detect_vocal_activity` finds sung regions in a mono mixture, keyed
on the share of a separated vocal estimate in it. `vocal_regions` picks between the two for one track.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage

from singerid.audio import as_mono_float32
from singerid.separation import RepetSim

__all__ = [
    "Lyrics",
    "LyricsError",
    "Phrase",
    "detect_vocal_activity",
    "parse_lrc",
    "read_lrc",
    "total_seconds",
    "vocal_regions",
]


class LyricsError(ValueError):
    """An LRC file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Phrase:
    """One sung line: [start, end) in seconds and its text (word stamps removed)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Lyrics:
    """Parsed LRC: phrases (sorted, non-overlapping), the number of skipped lines and the ID tags.

    ``instrumental`` is True when the file marks the track as instrumental (e.g. ``[00:00.00]纯音乐，请欣赏`` or
    ``[00:00.00](Instrumental)``) and has no sung phrase."""

    phrases: list[Phrase]
    skipped_lines: int
    tags: dict[str, str]
    instrumental: bool = False

    @property
    def regions(self) -> list[tuple[float, float]]:
        """The phrases as (start, end) intervals."""
        return [(phrase.start, phrase.end) for phrase in self.phrases]


# ---------------------------------------------------------------------------------------------------- LRC

# ID tags of the LRC convention (and common extensions); any other `[word:value]` line is malformed.
KNOWN_TAGS = frozenset(
    {"ar", "al", "ti", "au", "by", "length", "offset", "re", "ve", "#", "la", "lr", "id", "tool", "kana"}
)
# [mm:ss], [mm:ss.x], [mm:ss.xx], [mm:ss.xxx]; minutes may exceed 59; `:` as fraction separator is tolerated.
_STAMP = r"\[\s*([0-9]{1,6}):([0-9]{1,2})(?:[.:]([0-9]{1,3}))?\s*\]"
_STAMP_RE = re.compile(_STAMP)
_LEADING_STAMPS_RE = re.compile(rf"(?:\s*{_STAMP})+")
_WORD_STAMP_RE = re.compile(r"<\s*[0-9]{1,6}:[0-9]{1,2}(?:[.:][0-9]{1,3})?\s*>")
_TAG_RE = re.compile(r"\[\s*([A-Za-z#]+)\s*:(.*)\]")
_OFFSET_RE = re.compile(r"[+-]?[0-9]{1,9}(?:\.[0-9]*)?")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")  # not str.splitlines: that also breaks at U+0085, U+2028, ...
# Stamped lines that are not sung: credits ("作词 : A", "Composed by B", "編曲：C"), which streaming services put
# at the start of a song, over the intro, and instrumental marks ("纯音乐，请欣赏", "(Instrumental)").
_CREDIT_RE = re.compile(
    r"(?:作词|作曲|编曲|词曲|作詞|編曲|制作人|製作人|监制|混音|缩混|录音|母带|和声|配唱|出品|发行|演唱|原唱|"
    r"词|曲|작사|작곡|편곡|lyricist|composer|arranger|producer|lyrics|words|music)\s*[:：]"
    r"|(?:lyrics|words|music|written|composed|arranged|produced|mixed|mastered|recorded)\s+by\b",
    re.IGNORECASE,
)
_INSTRUMENTAL_RE = re.compile(r"[\W_]*instrumental\b.{0,30}|.{0,20}(?:纯音乐|純音樂).{0,20}", re.IGNORECASE)


def _stamp_milliseconds(match: re.Match[str]) -> int | None:
    """Milliseconds of one `[mm:ss.xx]` match, or None when the seconds field is 60 or more."""
    minutes, seconds, fraction = match.groups()
    if int(seconds) >= 60:
        return None
    fraction_ms = int(fraction) * 10 ** (3 - len(fraction)) if fraction else 0
    return int(minutes) * 60_000 + int(seconds) * 1000 + fraction_ms


def parse_lrc(text: str, *, max_phrase_seconds: float = 10.0, duration: float | None = None) -> Lyrics:
    """Parse LRC text into phrases; never raises on malformed content.

    `[mm:ss.xx]text` starts a phrase (several stamps on one line give one phrase per stamp); a stamp with no
    text, or with an instrumental mark, ends the phrase before it; otherwise a phrase ends at the next stamp,
    after at most `max_phrase_seconds`, and never after `duration`. Stamped credit lines ("作词 : A",
    "Composed by B") are not sung and are ignored. `[offset:N]` (ms) is subtracted from every stamp; phrases
    are then cut to start at 0 (those that end before 0 are dropped). Phrases that share an onset are merged
    (texts joined by " / "). Non-blank lines that are neither stamps nor known ID tags, and lines whose stamps
    all lie beyond `duration`, are counted in `skipped_lines`.
    """
    if not (math.isfinite(max_phrase_seconds) and max_phrase_seconds > 0):
        raise ValueError(f"max_phrase_seconds must be a positive number, got {max_phrase_seconds}")
    if duration is not None and not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be a non-negative number or None, got {duration}")

    tags: dict[str, str] = {}
    stamped_lines: list[tuple[list[int], str]] = []  # (stamps in ms before offset, text; "" = end mark)
    skipped = 0
    instrumental = False
    for raw_line in _LINE_BREAK_RE.split(text.lstrip("\ufeff")):
        line = raw_line.strip()
        if not line:
            continue
        stamps_match = _LEADING_STAMPS_RE.match(line)
        if stamps_match:
            stamps = [_stamp_milliseconds(m) for m in _STAMP_RE.finditer(stamps_match.group())]
            if None in stamps:
                skipped += 1
                continue
            body = " ".join(_WORD_STAMP_RE.sub(" ", line[stamps_match.end() :]).split())
            if _CREDIT_RE.match(body):
                continue
            if _INSTRUMENTAL_RE.fullmatch(body):
                instrumental, body = True, ""
            stamped_lines.append(([ms for ms in stamps if ms is not None], body))
            continue
        tag_match = _TAG_RE.fullmatch(line)
        if tag_match and tag_match.group(1).lower() in KNOWN_TAGS:
            key, value = tag_match.group(1).lower(), tag_match.group(2).strip()
            if key == "offset" and not _OFFSET_RE.fullmatch(value):
                skipped += 1
                continue
            tags[key] = value
            continue
        skipped += 1

    offset_ms = float(tags.get("offset", "0"))
    onsets: dict[float, list[str]] = {}
    end_marks: set[float] = set()
    for stamps, body in stamped_lines:
        times = [(ms - offset_ms) / 1000.0 for ms in stamps]
        if duration is not None:
            times = [t for t in times if t <= duration]
            if not times:
                skipped += 1
                continue
        for time in times:
            if not body:
                end_marks.add(time)
            elif body not in onsets.setdefault(time, []):
                onsets[time].append(body)

    boundaries = sorted(set(onsets) | end_marks)
    phrases: list[Phrase] = []
    for index, time in enumerate(boundaries):
        if time not in onsets:
            continue
        end = time + max_phrase_seconds
        if index + 1 < len(boundaries):
            end = min(end, boundaries[index + 1])
        if duration is not None:
            end = min(end, duration)
        start = max(time, 0.0)
        if end > start:
            phrases.append(Phrase(start, end, " / ".join(onsets[time])))
    return Lyrics(phrases=phrases, skipped_lines=skipped, tags=tags, instrumental=instrumental and not phrases)


def _decode_lrc_bytes(data: bytes) -> str:
    """Bytes to text: UTF-8 (with or without BOM), UTF-32/UTF-16 by BOM, UTF-16 without BOM by its zero bytes,
    else cp1252, else latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="replace")
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return data.decode("utf-32", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    # LRC text is mostly ASCII: in UTF-16 every other byte is then zero (the high byte of each code unit).
    if len(data) >= 4 and data.count(0) >= len(data) // 4:
        odd_zeros, even_zeros = data[1::2].count(0), data[0::2].count(0)
        return data.decode("utf-16-le" if odd_zeros >= even_zeros else "utf-16-be", errors="replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_lrc(path: str | Path, **kwargs: float | None) -> Lyrics:
    """Read and parse an LRC file (any common encoding); `kwargs` go to `parse_lrc`.

    Raises LyricsError naming the path when the file is missing or unreadable.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise LyricsError(f"{path}: cannot read lyrics file ({reason})") from error
    return parse_lrc(_decode_lrc_bytes(data), **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- vocal activity

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
