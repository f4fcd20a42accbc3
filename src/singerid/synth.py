"""A procedural singing corpus: source-filter singing voices over synthetic accompaniment.

Every singer is a fixed vector of voice parameters (`SingerVoice`); every track draws a new song (key, tempo,
melody, lyrics, arrangement, mix level, effects) and renders it through the same code path as a real catalog:
audio files, one LRC per track and a `metadata.csv`. Identical seeds and versions give identical bytes.

The voice model: a glottal-flow-derivative pulse train at an F0 contour (melody with portamento, vibrato, jitter
and shimmer), plus aspiration noise, shaped frame by frame in the STFT domain by a cascade of formant resonators
that follow the sung vowels and consonants, scaled by the singer's vocal-tract length, with the singer's spectral
tilt and singer's-formant strength. `difficulty` divides the spread of the singer population around its mean.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import soxr
from scipy.signal import fftconvolve, lfilter

from singerid.audio import write_audio
from singerid.errors import SingerIdError
from singerid.fileio import atomic_path, write_atomically
from singerid.parallel import map_in_processes
from singerid.progress import progress_bar
from singerid.splits import TEST_SEEN, TEST_UNSEEN, TRAIN, VAL

SYNTH_RATE = 22050  # rendering rate (16 kHz for 16 kHz files); files are resampled to SynthConfig.sample_rate
HOP = 256  # control and STFT hop at SYNTH_RATE (11.6 ms)
N_FFT = 4 * HOP
TABLE_SIZE = 2048
METADATA_COLUMNS = ("singer_id", "track_id", "path", "lrc_path", "split")

# Vowel formants F1-F3 (Hz) for an adult male vocal tract (Peterson & Barney averages); F4, F5 fixed.
VOWELS = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
VOWEL_NAMES = tuple(VOWELS)
HIGH_FORMANTS = (3300.0, 3750.0)
BASE_BANDWIDTHS = np.array([80.0, 90.0, 120.0, 150.0, 200.0])
# Consonants: voiced ones keep the glottal source with murmur formants; unvoiced ones are shaped noise.
VOICED_CONSONANTS = {
    "m": (250.0, 1100.0, 2300.0),
    "n": (250.0, 1500.0, 2500.0),
    "l": (360.0, 1300.0, 2600.0),
    "r": (420.0, 1300.0, 1600.0),
    "b": (200.0, 900.0, 2200.0),
    "d": (200.0, 1600.0, 2600.0),
}
UNVOICED_CONSONANTS = {  # (centre Hz, bandwidth Hz, level)
    "s": (6000.0, 2500.0, 0.5),
    "sh": (3000.0, 1500.0, 0.5),
    "f": (4000.0, 6000.0, 0.15),
    "h": (1500.0, 3000.0, 0.15),
    "t": (4000.0, 3000.0, 0.6),
    "k": (2000.0, 1500.0, 0.6),
    "p": (800.0, 1200.0, 0.5),
}
CONSONANTS = ("", *VOICED_CONSONANTS, *UNVOICED_CONSONANTS)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 4, 5, 3), (0, 3, 0, 4))
NAME_PARTS = ("Zoë", "Léa", "José", "Ana", "Noël", "Mai", "Ren", "Björn", "Chloé", "Iñigo", "Kai", "Olu")
SURNAMES = ("O'Brien", "Müller", "D'Arcy", "Nuñez", "Le Grand", "Ito", "Dvořák", "Smith", "Åberg", "N'Dour")


class SynthError(SingerIdError, ValueError):
    """Catalog settings the synthesizer cannot honour; the message says which and why."""


@dataclass(frozen=True)
class SynthConfig:
    """What `singerid synth` writes; every field is a command-line option."""

    singers: int = 60  # all singers, seen and unseen
    tracks: int = 10  # tracks per seen singer, split 8:2 into train and val
    test_tracks: int = 10  # test tracks per test singer: 6 enrollment + 4 query songs
    test_singers: int = 0  # seen singers with test tracks, and as many unseen singers; 0: singers // 6, at least 2
    seconds: float = 30.0  # length of each track
    seed: int = 0
    format: str = "mp3"  # mp3 | flac | wav
    sample_rate: int = 44100  # of the written files
    channels: int = 2  # 2: stereo, 1: mono (the stereo mix summed)
    stems: bool = False  # also write the clean (wet, mixed-level) vocal stem of each track as FLAC
    difficulty: float = 1.0  # divides the spread of singers around the population mean: higher = closer singers

    def __post_init__(self) -> None:
        if self.channels not in (1, 2):
            raise SynthError(f"channels must be 1 or 2, got {self.channels}")

    @property
    def render_rate(self) -> int:
        """The rate the audio is rendered at: 16 kHz for files of 16 kHz or less (a quarter less to compute, and
        nothing above 8 kHz that the files could keep), else SYNTH_RATE."""
        return 16000 if self.sample_rate <= 16000 else SYNTH_RATE

    def test_singer_count(self) -> int:
        return self.test_singers or max(2, self.singers // 6)


QUICK = {"singers": 6, "tracks": 5, "seconds": 6.0}
# The paper's layout (section III-A): 5,057 seen singers with 10 tracks (8:2 train/val), 706 of them with 10 more
# test_seen tracks, and 706 unseen singers with 10 test_unseen tracks: 64,690 tracks. Short 16 kHz mono FLAC tracks
# keep it within 20 GB and 45 minutes of synthesis on 2 cores (docs/SCALE.md).
PAPER = {
    "singers": 5763,
    "test_singers": 706,
    "tracks": 10,
    "test_tracks": 10,
    "seconds": 10.0,
    "format": "flac",
    "sample_rate": 16000,
    "channels": 1,
}
PRESETS = {"quick": QUICK, "paper": PAPER}


@dataclass(frozen=True)
class SingerVoice:
    """The identity of one synthetic singer: drawn once, used for all of the singer's tracks."""

    f0_center: float  # Hz, middle of the comfortable range
    vocal_tract: float  # length factor: formants are divided by it
    vibrato_rate: float  # Hz
    vibrato_depth: float  # cents
    portamento: float  # seconds, time constant of pitch glides
    jitter: float  # relative F0 perturbation
    shimmer: float  # relative amplitude perturbation
    tilt: float  # extra spectral roll-off exponent above 500 Hz
    breathiness: float  # aspiration-noise level relative to the voiced source
    singers_formant_gain: float  # strength of the 2.5-3.5 kHz cluster
    singers_formant_freq: float  # Hz
    open_quotient: float  # glottal open phase as a fraction of the period
    bandwidth_scale: float  # formant bandwidth factor
    formant_offsets: tuple[float, ...]  # 5 vowels x 3 formants, multiplicative


@dataclass(frozen=True)
class TrackPlan:
    """One track to render: who sings, which split, where it goes."""

    singer_index: int
    track_index: int
    singer_id: str
    track_id: str
    split: str
    audio_path: str  # relative to the catalog root
    lrc_path: str


def draw_singer(rng: np.random.Generator, difficulty: float) -> SingerVoice:
    """Draws a singer around the population mean; `difficulty` divides the spread."""
    s = 1.0 / max(difficulty, 1e-3)
    female = rng.random() < 0.5
    n = rng.standard_normal
    return SingerVoice(
        f0_center=(290.0 if female else 150.0) * 2 ** (3.0 * s * n() / 12),
        vocal_tract=(0.86 if female else 1.0) * (1 + 0.05 * s * n()),
        vibrato_rate=float(np.clip(5.5 + 0.7 * s * n(), 3.5, 8.0)),
        vibrato_depth=float(np.clip(60 + 30 * s * n(), 10, 160)),
        portamento=float(np.clip(0.05 + 0.03 * s * n(), 0.01, 0.2)),
        jitter=float(np.clip(0.01 + 0.006 * s * n(), 0.0, 0.04)),
        shimmer=float(np.clip(0.06 + 0.04 * s * n(), 0.0, 0.25)),
        tilt=float(np.clip(0.5 + 0.4 * s * n(), -0.3, 1.5)),
        breathiness=float(np.clip(0.12 + 0.08 * s * n(), 0.0, 0.5)),
        singers_formant_gain=float(np.clip(1.0 + 0.9 * s * n(), 0.0, 4.0)),
        singers_formant_freq=float(np.clip(3000 + 250 * s * n(), 2400, 3700)),
        open_quotient=float(np.clip(0.6 + 0.08 * s * n(), 0.4, 0.85)),
        bandwidth_scale=float(np.exp(0.2 * s * n())),
        formant_offsets=tuple(float(v) for v in np.exp(0.06 * s * rng.standard_normal(15))),
    )


def singer_rng(seed: int, singer_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, singer_index, 0]))


def track_rng(seed: int, singer_index: int, track_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, singer_index, track_index + 1]))


def singer_voice(config: SynthConfig, singer_index: int) -> SingerVoice:
    return draw_singer(singer_rng(config.seed, singer_index), config.difficulty)


# ----------------------------------------------------------------------------------------------- the song


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds
    duration: float
    midi: float
    consonant: str
    vowel: str


@dataclass(frozen=True)
class Song:
    tempo: float  # beats per minute
    key_root: int  # MIDI note of the tonic, in the bass octave
    scale: tuple[int, ...]
    progression: tuple[int, ...]
    syllables: tuple[Syllable, ...]
    phrases: tuple[tuple[float, float, str], ...]  # (start, end, lyric text)


def syllable_text(consonant: str, vowel: str) -> str:
    return consonant + vowel


def compose_song(rng: np.random.Generator, voice: SingerVoice, seconds: float) -> Song:
    """Draws key, tempo, chords, and a melody with lyrics in the singer's range, phrase by phrase."""
    tempo = float(rng.uniform(70, 140))
    beat = 60.0 / tempo
    bar = 4 * beat
    scale = SCALES["major" if rng.random() < 0.6 else "minor"]
    key_root = int(rng.integers(36, 48))
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    center_midi = 69 + 12 * np.log2(voice.f0_center / 440.0)
    # scale notes within +-7 semitones of the singer's centre
    candidates = np.array(
        [m for m in range(int(center_midi) - 8, int(center_midi) + 9) if (m - key_root) % 12 in scale], float
    )
    intro = min(bar * int(rng.integers(1, 3)), 0.2 * seconds)
    interlude_at = seconds * rng.uniform(0.45, 0.6) if seconds >= 15 else seconds
    interlude = bar * int(rng.integers(1, 3))
    syllables: list[Syllable] = []
    phrases: list[tuple[float, float, str]] = []
    t = intro
    note = int(rng.integers(len(candidates)))
    interlude_done = False
    while True:
        if not interlude_done and t >= interlude_at:
            t += interlude
            interlude_done = True
        count = int(rng.integers(4, 11))
        phrase_start = t
        words: list[str] = []
        word = ""
        for i in range(count):
            duration = beat * float(rng.choice((0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
            if t + duration > seconds - 0.5:
                break
            note = int(np.clip(note + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(candidates) - 1))
            consonant = CONSONANTS[int(rng.integers(len(CONSONANTS)))]
            vowel = VOWEL_NAMES[int(rng.integers(len(VOWEL_NAMES)))]
            syllables.append(Syllable(t, duration * 0.92, float(candidates[note]), consonant, vowel))
            word += syllable_text(consonant, vowel)
            if rng.random() < 0.45 or i == count - 1:
                words.append(word)
                word = ""
            t += duration
        if word:
            words.append(word)
        if t > phrase_start and words:
            phrases.append((phrase_start, syllables[-1].start + syllables[-1].duration, " ".join(words)))
        if t + beat > seconds - 1.0 or not words:
            break
        t = (np.floor(t / (bar / 2)) + 1 + int(rng.integers(0, 2))) * (bar / 2)
        if t > seconds - 1.5:
            break
    return Song(tempo, key_root, scale, progression, tuple(syllables), tuple(phrases))


# ---------------------------------------------------------------------------------------------- the voice


def glottal_table(open_quotient: float) -> np.ndarray:
    """One period of a Rosenberg glottal-flow derivative (radiated source), zero mean, unit peak."""
    x = np.arange(TABLE_SIZE) / TABLE_SIZE
    rise = 0.66 * open_quotient
    fall = open_quotient - rise
    flow = np.where(x < rise, 0.5 * (1 - np.cos(np.pi * x / rise)), 0.0)
    closing_phase = (x >= rise) & (x < open_quotient)
    flow[closing_phase] = np.cos(0.5 * np.pi * (x[closing_phase] - rise) / fall)
    derivative = np.diff(flow, append=flow[0])
    derivative -= derivative.mean()
    return derivative / np.abs(derivative).max()


def resonance(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Magnitude of a unit-DC-gain two-pole resonator, broadcast over (frames, formants, bins)."""
    c2 = centre**2
    return c2 / np.sqrt((c2 - freqs**2) ** 2 + (bandwidth * freqs) ** 2 + 1e-9)


def smooth_noise(rng: np.random.Generator, n: int, rate: float, sample_rate: int) -> np.ndarray:
    """Unit-variance noise that changes `rate` times per second, linearly interpolated to n samples."""
    points = max(2, int(n / sample_rate * rate) + 2)
    knots = rng.standard_normal(points)
    return np.interp(np.linspace(0, points - 1, n), np.arange(points), knots)


def render_voice(rng: np.random.Generator, voice: SingerVoice, song: Song, n: int, rate: int) -> np.ndarray:
    """Renders the dry singing voice of a song at `rate` Hz, (n,) float."""
    frames = (n + N_FFT - HOP) // HOP + 1  # the frames of `stft`; frame j is centred at (j - 1) * HOP
    times = (np.arange(frames) - 1) * HOP / rate
    starts = np.array([s.start for s in song.syllables])
    index = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, None)
    syllables = song.syllables
    ends = np.array([s.start + s.duration for s in syllables])
    inside = (times >= starts[index]) & (times < ends[index])
    since = times - starts[index]
    cons_duration = np.array([0.0 if not s.consonant else 0.07 for s in syllables])[index]
    in_consonant = inside & (since < cons_duration)
    unvoiced_consonant = np.array([s.consonant in UNVOICED_CONSONANTS for s in syllables])[index]

    # pitch: notes -> portamento -> vibrato, jitter
    midi = np.array([s.midi for s in syllables])[index]
    alpha = np.exp(-HOP / rate / voice.portamento)
    midi = lfilter([1 - alpha], [1, -alpha], midi, zi=[midi[0] * alpha])[0]
    vibrato_ramp = np.clip((since - 0.15) / 0.25, 0, 1)
    f0_frames = 440.0 * 2 ** ((midi - 69) / 12)
    sample_times = np.arange(n) / rate
    f0 = np.interp(sample_times, times, f0_frames)
    ramp = np.interp(sample_times, times, vibrato_ramp)
    vibrato_rate = voice.vibrato_rate * (1 + 0.03 * smooth_noise(rng, n, 1.0, rate))
    vibrato_phase = 2 * np.pi * np.cumsum(vibrato_rate) / rate + rng.uniform(0, 2 * np.pi)
    cents = voice.vibrato_depth * ramp * np.sin(vibrato_phase)
    cents += 1200 * voice.jitter * smooth_noise(rng, n, 120.0, rate)
    f0 = f0 * 2 ** (cents / 1200)
    phase = np.cumsum(f0 / rate)

    # amplitudes per frame: note attack/release, unvoiced consonants silence the glottis
    attack = np.clip(since / 0.04, 0, 1) * np.clip((ends[index] - times) / 0.06, 0, 1)
    voiced_amp = np.where(inside, attack, 0.0) * np.where(in_consonant & unvoiced_consonant, 0.05, 1.0)
    voiced_amp *= np.where(in_consonant & ~unvoiced_consonant, 0.5, 1.0)
    noise_amp = np.where(in_consonant & unvoiced_consonant, 1.0, 0.0)
    voiced_amp = lfilter([0.5], [1, -0.5], voiced_amp)
    amp_samples = np.interp(sample_times, times, voiced_amp)
    amp_samples *= 1 + voice.shimmer * smooth_noise(rng, n, 150.0, rate)
    table = glottal_table(voice.open_quotient)
    source = table[((phase % 1.0) * TABLE_SIZE).astype(np.int64)] * amp_samples

    # STFT of the source; noise sources are drawn directly in the STFT domain
    spectrum = stft(source)
    bins = np.fft.rfftfreq(N_FFT, 1 / rate).astype(np.float32)
    t_frames = frames
    sel = index
    targets = np.empty((t_frames, 5))
    offsets = np.array(voice.formant_offsets).reshape(5, 3)
    vowel_index = np.array([VOWEL_NAMES.index(s.vowel) for s in syllables])[sel]
    targets[:, :3] = np.array([VOWELS[v] for v in VOWEL_NAMES])[vowel_index] * offsets[vowel_index]
    targets[:, 3:] = HIGH_FORMANTS
    murmur = in_consonant & ~unvoiced_consonant
    if murmur.any():
        table_c = {c: f for c, f in VOICED_CONSONANTS.items()}
        targets[murmur, :3] = [table_c[syllables[i].consonant] for i in sel[murmur]]
    targets = lfilter([0.4], [1, -0.6], targets, axis=0, zi=targets[:1] * 0.6)[0]
    targets = (targets / voice.vocal_tract).astype(np.float32)
    bandwidths = (BASE_BANDWIDTHS * voice.bandwidth_scale).astype(np.float32)
    envelope = np.prod(resonance(bins[None, None, :], targets[:, :, None], bandwidths[None, :, None]), axis=1)
    singers = resonance(bins, np.array(voice.singers_formant_freq), np.array(400.0)) / (
        voice.singers_formant_freq / 400.0
    )
    envelope *= 1 + voice.singers_formant_gain * singers[None, :]
    envelope *= np.minimum(1.0, (bins / 500.0 + 1e-9) ** (-voice.tilt))[None, :]
    noise = np.empty(spectrum.shape, np.complex64)  # complex64: the noise needs no more precision
    noise.real = rng.standard_normal(spectrum.shape, dtype=np.float32)
    noise.imag = rng.standard_normal(spectrum.shape, dtype=np.float32)
    breath = (voice.breathiness * 8.0 * voiced_amp[:, None]).astype(np.float32) * (bins > 800)[None, :]
    spectrum = (spectrum + breath * noise) * envelope
    if noise_amp.any():  # fricatives: only the frames of unvoiced consonants
        frames_u = np.flatnonzero(noise_amp > 0)
        params = np.array([UNVOICED_CONSONANTS[syllables[i].consonant] for i in sel[frames_u]])
        shape = resonance(bins[None, :], params[:, :1], params[:, 1:2]) / (params[:, :1] / params[:, 1:2])
        spectrum[frames_u] += 6.0 * params[:, 2:3] * shape * noise[frames_u]
    return istft(spectrum, n)


def stft(signal: np.ndarray) -> np.ndarray:
    """Hann-windowed STFT at HOP with N_FFT (75 % overlap), (frames, bins)."""
    padded = np.pad(signal.astype(np.float32), (N_FFT - HOP, N_FFT))
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    return scipy.fft.rfft(windows * np.hanning(N_FFT).astype(np.float32), axis=1)  # complex64


def istft(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Weighted overlap-add inverse of `stft`, trimmed to n samples."""
    frames = scipy.fft.irfft(spectrum, N_FFT, axis=1) * np.hanning(N_FFT).astype(np.float32)
    blocks = frames.reshape(len(frames), 4, HOP)
    out = np.zeros((len(frames) + 3, HOP))
    for j in range(4):
        out[j : j + len(frames)] += blocks[:, j]
    norm = np.sum(np.hanning(N_FFT).reshape(4, HOP) ** 2, axis=0)
    return (out.reshape(-1) / np.tile(norm, len(out)))[N_FFT - HOP : N_FFT - HOP + n]


# ------------------------------------------------------------------------------------------ accompaniment


def wavetable(rng: np.random.Generator, family: str) -> np.ndarray:
    """One period of an instrument timbre from random harmonic weights of a family."""
    harmonics = np.arange(1, 17)
    rolloff = {"organ": 1.2, "piano": 1.6, "pad": 2.0, "strings": 1.0, "pluck": 1.3}[family]
    weights = harmonics ** (-rolloff) * rng.uniform(0.5, 1.5, harmonics.size)
    if family == "organ":
        weights[1::2] *= rng.uniform(0.1, 0.5)
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    x = np.arange(TABLE_SIZE) / TABLE_SIZE * 2 * np.pi
    table = np.sum(weights[:, None] * np.sin(harmonics[:, None] * x[None, :] + phases[:, None]), axis=0)
    return table / np.abs(table).max()


ENVELOPES = {  # (attack seconds, exponential decay per second)
    "organ": (0.01, 0.0),
    "piano": (0.005, 1.5),
    "pad": (0.3, 0.0),
    "strings": (0.15, 0.0),
    "pluck": (0.003, 4.0),
}


def note_samples(table: np.ndarray, duration: float, midi: float, family: str, rate: int) -> np.ndarray:
    """One enveloped wavetable note."""
    t = np.arange(int(duration * rate), dtype=np.float32) / rate
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    phase = (np.arange(t.size) * (freq * TABLE_SIZE / rate)).astype(np.int64) % TABLE_SIZE
    attack, decay = ENVELOPES[family]
    envelope = np.minimum(1.0, t / attack) * np.minimum(1.0, (duration - t) / 0.05)
    if decay:
        envelope *= np.exp(-decay * t)
    return table[phase] * envelope


def add_at(out: np.ndarray, start: float, piece: np.ndarray, rate: int) -> None:
    """Adds `piece` into `out` from `start` seconds on, cut at the end of `out`."""
    i0 = int(start * rate)
    length = min(piece.size, out.size - i0)
    if length > 0:
        out[i0 : i0 + length] += piece[:length]


def drum_samples(rng: np.random.Generator, rate: int) -> dict[str, np.ndarray]:
    t = np.arange(int(0.3 * rate)) / rate
    kick_freq = rng.uniform(45, 70) * (1 + 3 * np.exp(-t * 40))
    kick = np.sin(2 * np.pi * np.cumsum(kick_freq) / rate) * np.exp(-t * rng.uniform(10, 20))
    snare = (0.6 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    hat_len = int(0.05 * rate)
    hat = np.diff(rng.standard_normal(hat_len + 1)) * np.exp(-np.arange(hat_len) / rate * 80) * 0.3
    return {"kick": kick, "snare": snare, "hat": hat}


def render_accompaniment(rng: np.random.Generator, song: Song, n: int, rate: int) -> np.ndarray:
    """Chords, bass and drums in the song's key and tempo, stereo (2, n)."""
    out = np.zeros((2, n))
    beat = 60.0 / song.tempo
    bar = 4 * beat
    families = ("organ", "piano", "pad", "strings", "pluck")
    chosen = rng.choice(len(families), size=2, replace=False)
    duration = n / rate
    for k in chosen:
        family = families[k]
        table = wavetable(rng, family)
        pan = rng.uniform(-0.8, 0.8)
        gain = rng.uniform(0.5, 1.0)
        channel = np.zeros(n)
        per_bar = 1 if family in ("pad", "strings", "organ") else 2
        chords: dict[int, np.ndarray] = {}
        for degree in set(song.progression):
            triad = [song.scale[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
            notes = [note_samples(table, bar / per_bar, song.key_root + 12 + i, family, rate) for i in triad]
            chords[degree] = gain / 3 * np.sum(notes, axis=0)
        for b in range(int(duration / bar) + 1):
            for h in range(per_bar):
                add_at(channel, b * bar + h * bar / per_bar, chords[song.progression[b % len(song.progression)]], rate)
        out[0] += channel * np.sqrt((1 - pan) / 2)
        out[1] += channel * np.sqrt((1 + pan) / 2)
    bass_table = wavetable(rng, "pluck")
    bass = np.zeros(n)
    bass_notes = {i: 0.6 * note_samples(bass_table, beat, song.key_root + i, "pluck", rate) for i in song.scale}
    for i in range(int(duration / beat) + 1):
        degree = song.progression[int(i * beat / bar) % len(song.progression)]
        interval = song.scale[degree] if i % 2 == 0 else song.scale[(degree + 4) % 7]
        add_at(bass, i * beat, bass_notes[interval], rate)
    out += bass
    if rng.random() < 0.85:
        drums = drum_samples(rng, rate)
        hits = np.zeros(n)
        for i in range(int(duration / beat * 2) + 1):
            for name, gain, every in (("kick", 0.9, 4), ("snare", 0.5, 4), ("hat", 0.4, 1)):
                offset = 2 if name == "snare" else 0
                if (i - offset) % every == 0:
                    add_at(hits, i * beat / 2, gain * drums[name], rate)
        out += hits
    return out


def apply_effect(rng: np.random.Generator, dry: np.ndarray, rate: int) -> np.ndarray:
    """A per-track reverb (decaying noise impulse) or feedback delay on the voice, stereo (2, n)."""
    n = dry.size
    if rng.random() < 0.6:
        rt60 = rng.uniform(0.3, 1.8)
        length = int(min(rt60, 1.2) * rate)
        t = np.arange(length) / rate
        decay = np.exp(-6.9 * t / rt60)
        wet = rng.uniform(0.1, 0.35)
        out = np.empty((2, n))
        for c in range(2):
            ir = rng.standard_normal(length) * decay
            ir *= wet / np.sqrt(np.sum(ir**2))
            ir[0] += 1.0
            out[c] = fftconvolve(dry, ir)[:n]
        return out
    delay = int(rng.uniform(0.12, 0.4) * rate)
    feedback = rng.uniform(0.2, 0.45)
    wet = dry.copy()
    for tap in range(1, 5):
        shift = delay * tap
        if shift >= n:
            break
        wet[shift:] += dry[:-shift] * feedback**tap
    return np.stack([wet, wet])


# ------------------------------------------------------------------------------------------------ a track


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-12))


def render_track(config: SynthConfig, plan: TrackPlan) -> tuple[np.ndarray, np.ndarray | None, Song]:
    """Mix (channels, n) and, with config.stems, the wet vocal stem (channels, n) at config.sample_rate; and the
    song."""
    voice = singer_voice(config, plan.singer_index)
    rng = track_rng(config.seed, plan.singer_index, plan.track_index)
    style = rng.standard_normal(4)  # small within-singer variation from song to song
    voice = SingerVoiceVariation.apply(voice, style)
    rate = config.render_rate
    n = int(config.seconds * rate)
    song = compose_song(rng, voice, config.seconds)
    dry = render_voice(rng, voice, song, n, rate)
    vocals = apply_effect(rng, dry, rate)
    music = render_accompaniment(rng, song, n, rate)
    voiced = np.zeros(n, bool)
    for start, end, _ in song.phrases:
        voiced[int(start * rate) : int(end * rate)] = True
    ratio_db = rng.uniform(-5.0, 10.0)
    vocal_level = rms(vocals[:, voiced]) if voiced.any() else 1.0
    vocals *= rms(music) * 10 ** (ratio_db / 20) / vocal_level
    mix = vocals + music
    scale = 10 ** (-1 / 20) / max(np.abs(mix).max(), 1e-9)
    mix, vocals = mix * scale, vocals * scale
    if config.channels == 1:
        mix, vocals = mix.mean(axis=0, keepdims=True), vocals.mean(axis=0, keepdims=True)
    out_mix = soxr.resample(mix.T, rate, config.sample_rate, quality="HQ").T
    out_vocals = soxr.resample(vocals.T, rate, config.sample_rate, quality="HQ").T if config.stems else None
    return np.clip(out_mix, -1, 1).astype(np.float32), out_vocals, song


class SingerVoiceVariation:
    """Song-to-song variation of one singer: vocal effort and a touch of vocal-tract and pitch change."""

    @staticmethod
    def apply(voice: SingerVoice, style: np.ndarray) -> SingerVoice:
        values = asdict(voice)
        values["f0_center"] *= 2 ** (1.5 * style[0] / 12)
        values["vocal_tract"] *= 1 + 0.01 * style[1]
        values["tilt"] += 0.15 * style[2]
        values["breathiness"] = max(0.0, values["breathiness"] * (1 + 0.2 * style[3]))
        values["formant_offsets"] = tuple(values["formant_offsets"])
        return SingerVoice(**values)


def format_stamp(seconds: float, millis: bool) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"[{int(minutes):02d}:{rest:06.3f}]" if millis else f"[{int(minutes):02d}:{rest:05.2f}]"


def lrc_text(rng: np.random.Generator, song: Song, plan: TrackPlan, seconds: float) -> str:
    """LRC lyrics with phrase onsets and end marks, in one of several real-world styles."""
    millis = rng.random() < 0.3
    lines = [
        f"[ar:{plan.singer_id}]",
        f"[ti:{plan.track_id}]",
        f"[length:{format_stamp(seconds, False)[1:-1]}]",
    ]
    for start, end, text in song.phrases:
        lines.append(f"{format_stamp(start, millis)}{text}")
        lines.append(format_stamp(end, millis))
    newline = "\r\n" if rng.random() < 0.3 else "\n"
    bom = "\ufeff" if rng.random() < 0.3 else ""
    return bom + newline.join(lines) + newline


# ------------------------------------------------------------------------------------------- the catalog


def singer_name(config: SynthConfig, index: int) -> str:
    rng = singer_rng(config.seed, index)
    first = NAME_PARTS[int(rng.integers(len(NAME_PARTS)))]
    last = SURNAMES[int(rng.integers(len(SURNAMES)))]
    return unicodedata.normalize("NFC", f"{first} {last}")


def plan_catalog(config: SynthConfig) -> list[TrackPlan]:
    """Singers and their tracks with the paper's splits: seen singers' tracks 8:2 train/val, plus separate
    test tracks for some seen singers; unseen singers have test tracks only."""
    k = config.test_singer_count()
    if config.singers < 2 * k + 1 or config.tracks < 2:
        raise SynthError(f"need at least {2 * k + 1} singers and 2 tracks per singer for {k} test singers")
    if config.test_tracks < 7:
        raise SynthError("test singers need at least 7 test tracks (6 enrollment songs and a query song)")
    plans = []
    seen = config.singers - k
    for s in range(config.singers):
        singer_id = f"s{s:03d}"
        folder = f"{singer_id} {singer_name(config, s)}"
        splits: list[str] = []
        if s < seen:
            val = max(1, round(config.tracks * 0.2))
            splits += [TRAIN] * (config.tracks - val) + [VAL] * val
            if s < k:
                splits += [TEST_SEEN] * config.test_tracks
        else:
            splits += [TEST_UNSEEN] * config.test_tracks
        for t, split in enumerate(splits):
            track_id = f"{singer_id}_t{t:02d}"
            stem = f"audio/{folder}/{t:02d} Song {t:02d} - l'été"
            plans.append(TrackPlan(s, t, singer_id, track_id, split, f"{stem}.{config.format}", f"{stem}.lrc"))
    return plans


def write_track(config: SynthConfig, plan: TrackPlan, root: Path) -> str:
    """Renders and writes one track (audio, LRC, optional stem); returns its track id."""
    mix, vocals, song = render_track(config, plan)
    audio_path = root / plan.audio_path
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    rng = track_rng(config.seed, plan.singer_index, plan.track_index + 10_000)
    write_atomically(root / plan.lrc_path, lrc_text(rng, song, plan, config.seconds))
    if config.stems:
        stem = root / "stems" / f"{plan.track_id}.flac"
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_audio(stem, vocals.astype(np.float32), config.sample_rate)
    write_audio(audio_path, mix, config.sample_rate)  # last: its presence marks the track done
    return plan.track_id


def _write_track_job(args: tuple[SynthConfig, TrackPlan, Path]) -> str:
    return write_track(*args)


def synthesize(config: SynthConfig, out: Path, workers: int = 1, progress: bool = True) -> Path:
    """Writes the catalog under `out` and returns the path of its metadata.csv; finished tracks are kept."""
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_catalog(config)
    todo = [
        p
        for p in plans
        if not (out / p.audio_path).exists() or (config.stems and not (out / "stems" / f"{p.track_id}.flac").exists())
    ]
    jobs = [(config, p, out) for p in todo]
    bar = progress_bar(
        total=len(plans), initial=len(plans) - len(todo), desc="synth", unit="track", disable=not progress
    )
    with closing(map_in_processes(_write_track_job, jobs, workers)) as results:
        for _ in results:
            bar.update()
    bar.close()
    metadata = out / "metadata.csv"
    with atomic_path(metadata) as temporary, temporary.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(METADATA_COLUMNS)
        for p in plans:
            writer.writerow([p.singer_id, p.track_id, p.audio_path, p.lrc_path, p.split])
    write_singers(config, out / "singers.json")
    return metadata


def write_singers(config: SynthConfig, path: Path) -> None:
    """The ground truth of the corpus: the synth config and every singer's voice parameters."""
    record = {
        "config": asdict(config),
        "singers": {f"s{i:03d}": asdict(singer_voice(config, i)) for i in range(config.singers)},
    }
    write_atomically(path, json.dumps(record, indent=1))
