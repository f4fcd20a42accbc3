"""The front end of one track (section III-A of the paper): decode to 16 kHz mono, optional vocal separation,
vocal regions from LRC phrases (else the vocal-activity detector), and the log-mel frames inside the regions.
`prepare` runs it over a catalog; `SingerEncoder` on single files.

A track is read in blocks, never whole, so memory stays bounded whatever its length (besides the frames kept):
a first pass measures it (length, peak) and, when the detector will be needed, computes its per-frame features;
the regions are decided; a last pass computes the log-mel of the kept frames only. A file is decoded again for
each pass (decoding is cheap beside the detector and the separators):

- lyrics, no separator: one pass (the regions are known from the lyrics before the audio is read);
- lyrics and a separator: two (the separator needs the track's length first);
- detector, no separator: two, or three on an accompanied track (REPET-SIM's estimate for the vocal share);
- detector and a separator: two; on an accompanied track the pass that gives the vocal share also keeps the
  separated signal's float16 log-mel of every frame (46 MB per hour), so that the separator runs once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from singerid.audio import AudioError, AudioReader, as_mono_float32
from singerid.errors import SignalError
from singerid.features import CHUNK_FRAMES, CentredFramer, FeatureConfig, FrontendConfig, log_mel_piece, log_mel_stream
from singerid.lyrics import Lyrics, LyricsError, read_lrc
from singerid.separation import Blocks, RepetSim, Separator, build_separator
from singerid.vad import audible_regions, frame_features, lyric_regions, regions_from_features, total_seconds

SILENT_PEAK = 1e-4  # -80 dBFS: a track whose peak stays below is silent
_WAVE_BLOCK = 1 << 16  # samples per block when a signal in memory is read as blocks
# The accompaniment bank (the mixing augmentation's material): at most BANK_SECONDS of frames per track outside its
# vocal regions, in runs of BANK_RUN_SECONDS evenly spread over the track, each at least BANK_MARGIN_SECONDS from
# any vocal frame (LRC timings are coarse), none BANK_QUIET_DB below the track's voice (silence is no accompaniment).
BANK_SECONDS = 10.0
BANK_RUN_SECONDS = 0.25
BANK_MARGIN_SECONDS = 0.25
BANK_QUIET_DB = 40.0


class TrackFrames(NamedTuple):
    """The front end's output for one track."""

    frames: np.ndarray  # (frames, n_mels) float16 log-mel of the vocal regions
    method: str  # "lrc" or "vad": how the regions were found
    voice_seconds: float
    lyrics_note: str  # what the lyrics gave: "12 phrases", "no lyrics file", "no timed phrases, 3 lines skipped"
    bank: np.ndarray  # (frames, n_mels) float16 log-mel of accompaniment-only runs (see BANK_SECONDS), maybe none
    truncated_seconds: float = 0.0  # seconds of the file beyond max_track_seconds, left out (0.0: nothing cut)
    keep: np.ndarray | None = None  # which frames of the analysed signal `frames` are: a mask over all its frames


class BankCollector:
    """Picks a track's accompaniment runs while its log-mel chunks pass by, without knowing its length: runs of
    `run` frames (aligned on multiples of `run`) that lie at least `margin` frames from every frame of `vocal` (a
    mask that may end before the track); every `stride`-th run is held, the stride doubling whenever more than
    twice the `runs` wanted are held, so memory stays bounded and the runs held stay evenly spread."""

    def __init__(self, vocal: np.ndarray, run: int, margin: int, runs: int) -> None:
        padded = np.concatenate([np.asarray(vocal, bool), np.zeros(margin, bool)])
        counts = np.concatenate([[0], np.cumsum(padded)])
        index = np.arange(len(padded))
        self.near = counts[np.minimum(index + margin + 1, len(padded))] > counts[np.maximum(index - margin, 0)]
        self.run, self.runs, self.stride = run, runs, 1
        self.held: dict[int, np.ndarray] = {}
        self.tail: np.ndarray | None = None  # the frames of the run not yet complete

    def push(self, chunk: np.ndarray, first: int) -> None:
        """The log-mel frames `first`, `first + 1`, ... of the track (consecutive calls, consecutive frames)."""
        frames = chunk if self.tail is None else np.concatenate([self.tail, chunk])
        start = first - (0 if self.tail is None else len(self.tail))  # a multiple of `run`
        complete = len(frames) // self.run
        for j in range(complete):
            k = start // self.run + j
            if k % self.stride or self.near[k * self.run : (k + 1) * self.run].any():
                continue
            self.held[k] = frames[j * self.run : (j + 1) * self.run].astype(np.float16)
            if len(self.held) > 2 * self.runs:
                self.stride *= 2
                self.held = {k: v for k, v in self.held.items() if k % self.stride == 0}
        self.tail = frames[complete * self.run :]

    def bank(self, voice: np.ndarray, quiet_db: float) -> np.ndarray:
        """At most `runs` of the runs held, evenly spread, leaving out those whose mean mel power is `quiet_db`
        below that of the `voice` frames; (frames, n_mels) float16."""
        floor = float(np.exp(voice.astype(np.float32)).mean()) * 10 ** (-quiet_db / 10) if len(voice) else 0.0
        loud = [v for _, v in sorted(self.held.items()) if np.exp(v.astype(np.float32)).mean() >= floor]
        if len(loud) > self.runs:
            loud = [loud[i] for i in np.linspace(0, len(loud) - 1, self.runs).round().astype(int)]
        return np.concatenate(loud) if loud else np.empty((0, voice.shape[1]), np.float16)


class _Scan:
    """Length and peak of a signal, gathered while its blocks pass by."""

    def __init__(self) -> None:
        self.samples = 0
        self.peak = 0.0

    def watch(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self.samples += len(block)
            if len(block):
                self.peak = max(self.peak, float(block.max()), -float(block.min()))
            yield block


def _wave_blocks(wave: np.ndarray, sample_rate: int) -> Blocks:
    """A signal in memory as consecutive float32 blocks (SignalError for a bad shape or non-finite samples)."""
    if np.ndim(wave) != 1:
        raise SignalError(f"expects a mono (samples,) wave, got shape {np.shape(wave)}")

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, len(wave), _WAVE_BLOCK):
            try:
                yield as_mono_float32(wave[start : start + _WAVE_BLOCK], sample_rate)
            except ValueError as error:
                raise SignalError(str(error)) from None

    return blocks


class TrackFrontend:
    """The front end of one worker process: decoder, separator, regions, log-mel."""

    def __init__(self, frontend: FrontendConfig, features: FeatureConfig) -> None:
        self.frontend = frontend
        self.features = features
        self.separator: Separator = build_separator(frontend.separation, frontend.separator_weights)

    def file_frames(self, audio: Path, lrc: Path | None, *, allow_little_voice: bool = False) -> TrackFrames:
        """Log-mel frames of a file's vocal regions, how they were found, and the seconds of voice.

        A file longer than `max_track_seconds` is cut there, with a warning; `truncated_seconds` says how much was
        left out. With `allow_little_voice`, a track with less voice than `min_voice_seconds` gives what there is
        (see `wave_frames`). AudioError, naming the file, for a file that cannot be used.
        """
        reader = AudioReader(audio, self.features.sample_rate, max_seconds=self.frontend.max_track_seconds)
        try:
            return self._frames(reader.__iter__, self.frontend.max_track_seconds, lrc, allow_little_voice, reader)
        except SignalError as error:
            raise AudioError(audio, str(error)) from None

    def wave_frames(
        self, wave: np.ndarray, lrc: Path | None = None, *, allow_little_voice: bool = False
    ) -> TrackFrames:
        """The same for a 16 kHz mono signal; SignalError when it is silent or has too little voice.

        With `allow_little_voice`, a track with less voice than `min_voice_seconds` gives the frames of the regions
        found instead, or, when none were found, of the whole non-silent signal, with a warning; a silent track
        still raises.
        """
        blocks = _wave_blocks(wave, self.features.sample_rate)
        return self._frames(blocks, len(wave) / self.features.sample_rate, lrc, allow_little_voice, None)

    def _frames(
        self, blocks: Blocks, longest: float, lrc: Path | None, allow_little_voice: bool, reader: AudioReader | None
    ) -> TrackFrames:
        """The frames of the signal `blocks()` yields, at most `longest` seconds long."""
        sr = self.features.sample_rate
        name = f"{reader.path}: " if reader is not None else ""
        plain = self.frontend.separation == "none"
        # Lyrics give the regions before the audio is read (cut to its length later): without a separator, the first
        # pass computes the frames too. Without lyrics, it computes the detector's features.
        planned = self._lyrics(lrc, None)[0]
        planned_regions = lyric_regions(planned, longest) if planned is not None and plain else []

        scan = _Scan()
        kept = features = None
        if planned_regions:
            planned_keep = self._keep(planned_regions)
            planned_bank = self._bank_collector(planned_keep)
            kept = self._select(log_mel_stream(scan.watch(blocks()), self.features), planned_keep, planned_bank)
        elif planned is None:
            features = frame_features(scan.watch(blocks()), sr)
        else:
            for _ in scan.watch(blocks()):
                pass
        if scan.peak < SILENT_PEAK:
            raise SignalError("silent audio (peak below -80 dBFS)")
        truncated = reader.truncated_seconds if reader is not None else 0.0
        if truncated:
            warnings.warn(
                f"{name}longer than max_track_seconds ({self.frontend.max_track_seconds:g} s): "
                f"the last {truncated:.1f} s were left out",
                stacklevel=3,
            )
        duration = scan.samples / sr
        lyrics, note = self._lyrics(lrc, duration)

        analysed = blocks if plain else self._separated(self.separator, blocks, scan.samples)
        held: list[np.ndarray] = []  # the separated signal's log-mel, when the detector's pass made it
        if lyrics is not None:
            method, regions = "lrc", lyric_regions(lyrics, duration)
        else:
            method = "vad"
            if features is None:
                features = frame_features(blocks(), sr)

            def vocal_energy_db() -> np.ndarray:
                """Of the detector's own estimate without a separator; else of the separator's, whose log-mel is
                kept on the way (the separator runs once)."""
                if plain:
                    vocals = RepetSim().separate_blocks(blocks, sr, scan.samples)
                else:
                    vocals = self._log_mel_tap(analysed(), held)
                return frame_features(vocals, sr, energy_only=True).energy_db

            regions = regions_from_features(features, vocal_energy_db, sr, duration)
        seconds = total_seconds(regions)
        if seconds < self.frontend.min_voice_seconds:
            message = f"only {seconds:.2f} s of voice found by {method} (minimum {self.frontend.min_voice_seconds} s)"
            if not allow_little_voice:
                raise SignalError(message)
            used = "the frames of the regions found"
            if not regions:
                if features is None:
                    features = frame_features(blocks(), sr)
                regions = audible_regions(features.energy_db, sr, duration)
                used = "the whole non-silent signal"
            warnings.warn(f"{name}{message}; using {used}", stacklevel=3)

        keep = self._keep(regions, 1 + scan.samples // self.features.hop_length)
        if kept is not None:
            computed = self._keep(planned_regions, len(keep))  # the frames of `kept`; its bank lies off them
            if not np.any(keep & ~computed):
                frames = kept if np.array_equal(keep, computed) else kept[keep[computed]]
                bank = planned_bank.bank(frames, BANK_QUIET_DB)
                return TrackFrames(frames, method, seconds, note, bank, truncated, keep)
        collector = self._bank_collector(keep)
        frames = self._select(held or log_mel_stream(analysed(), self.features), keep, collector)
        return TrackFrames(frames, method, seconds, note, collector.bank(frames, BANK_QUIET_DB), truncated, keep)

    def _bank_collector(self, vocal: np.ndarray) -> BankCollector:
        fps = self.features.sample_rate / self.features.hop_length
        run = max(1, round(BANK_RUN_SECONDS * fps))
        return BankCollector(vocal, run, round(BANK_MARGIN_SECONDS * fps), max(1, round(BANK_SECONDS * fps) // run))

    def _lyrics(self, lrc: Path | None, duration: float | None) -> tuple[Lyrics | None, str]:
        """The track's lyrics when they have phrases or mark it instrumental (else None), and the note on what they
        gave; SignalError for an instrumental track once its `duration` is known."""
        if lrc is None:
            return None, "no lyrics file"
        if self.frontend.regions != "auto":
            return None, "--vad"
        try:
            lyrics = read_lrc(lrc, max_phrase_seconds=self.frontend.max_phrase_seconds, duration=duration)
        except LyricsError as error:  # unreadable lyrics: the detector finds the regions instead
            return None, f"lyrics unreadable ({error})"
        if lyrics.instrumental and duration is not None:
            raise SignalError(f"instrumental track: its lyrics file {lrc.name} says so")
        skipped = f", {lyrics.skipped_lines} lines skipped" if lyrics.skipped_lines else ""
        note = f"{len(lyrics.phrases)} phrases{skipped}" if lyrics.phrases else f"no timed phrases{skipped}"
        return (lyrics if lyrics.phrases or lyrics.instrumental else None), note

    def _separated(self, separator: Separator, blocks: Blocks, samples: int) -> Blocks:
        return lambda: separator.separate_blocks(blocks, self.features.sample_rate, samples)

    def _keep(self, regions: Sequence[tuple[float, float]], frames: int | None = None) -> np.ndarray:
        """The frames inside the regions, as a mask of `frames` frames (else up to the last region's end)."""
        fps = self.features.sample_rate / self.features.hop_length
        spans = [(int(round(start * fps)), int(round(end * fps))) for start, end in regions]
        keep = np.zeros(max((end for _, end in spans), default=0) if frames is None else frames, bool)
        for start, end in spans:
            keep[start:end] = True
        return keep

    def _log_mel_tap(self, blocks: Iterable[np.ndarray], chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
        """Passes `blocks` on, adding the float16 log-mel of the signal they make up to `chunks` on the way."""
        framer = CentredFramer(self.features.n_fft, self.features.hop_length, CHUNK_FRAMES)
        for block in blocks:
            chunks += [log_mel_piece(piece, self.features).astype(np.float16) for piece in framer.push(block)]
            yield block
        chunks += [log_mel_piece(piece, self.features).astype(np.float16) for piece in framer.finish()]

    def _select(self, chunks: Iterable[np.ndarray], keep: np.ndarray, bank: BankCollector) -> np.ndarray:
        """The frames of `keep` (a mask that may end before the signal) from consecutive log-mel chunks, float16;
        `bank` sees every chunk on the way."""
        kept = np.empty((int(keep.sum()), self.features.n_mels), np.float16)
        first = filled = 0
        for chunk in chunks:
            bank.push(chunk, first)
            mask = keep[first : first + len(chunk)]
            count = int(mask.sum())
            kept[filled : filled + count] = chunk[: len(mask)][mask]
            first += len(chunk)
            filled += count
        return kept[:filled]
