"""The front end of one track (section III-A of the paper): decode to 16 kHz mono, optional vocal separation,
vocal regions from LRC phrases (else the vocal-activity detector on the separated signal), log-mel of the whole
track, and the frames inside the regions. `prepare` runs it over a catalog; `SingerEncoder` on single files."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from singerid.audio import AudioError, load_audio
from singerid.errors import SignalError
from singerid.features import FeatureConfig, FrontendConfig, log_mel
from singerid.lyrics import LyricsError, read_lrc
from singerid.separation import Separator, build_separator
from singerid.vad import total_seconds, vocal_regions


class TrackFrames(NamedTuple):
    """The front end's output for one track."""

    frames: np.ndarray  # (frames, n_mels) float16 log-mel of the vocal regions
    method: str  # "lrc" or "vad": how the regions were found
    voice_seconds: float
    lyrics_note: str  # what the lyrics gave: "12 phrases", "no lyrics file", "no timed phrases, 3 lines skipped"


class TrackFrontend:
    """The front end of one worker process: decoder, separator, regions, log-mel."""

    def __init__(self, frontend: FrontendConfig, features: FeatureConfig) -> None:
        self.frontend = frontend
        self.features = features
        self.separator: Separator = build_separator(frontend.separation, frontend.separator_weights)

    def file_frames(self, audio: Path, lrc: Path | None) -> TrackFrames:
        """Log-mel frames of a file's vocal regions, how they were found, and the seconds of voice."""
        wave = load_audio(audio, self.features.sample_rate, max_seconds=self.frontend.max_track_seconds)
        try:
            return self.wave_frames(wave, lrc)
        except SignalError as error:
            raise AudioError(audio, str(error)) from None

    def wave_frames(self, wave: np.ndarray, lrc: Path | None = None) -> TrackFrames:
        """The same for a 16 kHz mono signal; SignalError when it is silent or has too little voice."""
        sr = self.features.sample_rate
        if wave.size == 0 or np.max(np.abs(wave)) < 1e-4:
            raise SignalError("silent audio (peak below -80 dBFS)")
        vocals = self.separator.separate(wave, sr)
        lyrics = None
        note = "no lyrics file" if lrc is None else "--vad"
        if self.frontend.regions == "auto" and lrc is not None:
            try:
                lyrics = read_lrc(lrc, max_phrase_seconds=self.frontend.max_phrase_seconds, duration=len(wave) / sr)
            except LyricsError as error:  # unreadable lyrics: the detector finds the regions instead
                note = f"lyrics unreadable ({error})"
            if lyrics is not None and lyrics.instrumental:
                raise SignalError(f"instrumental track: its lyrics file {lrc.name} says so")
            if lyrics is not None:
                skipped = f", {lyrics.skipped_lines} lines skipped" if lyrics.skipped_lines else ""
                note = f"{len(lyrics.phrases)} phrases{skipped}" if lyrics.phrases else f"no timed phrases{skipped}"
        method = "lrc" if lyrics is not None and lyrics.phrases else "vad"
        # the detector weighs the separated vocals against the mixture (without a separator it makes its own)
        separated = None if self.frontend.separation == "none" else vocals
        regions = vocal_regions(wave, sr, lyrics if method == "lrc" else None, vocals=separated)
        seconds = total_seconds(regions)
        if seconds < self.frontend.min_voice_seconds:
            raise SignalError(
                f"only {seconds:.2f} s of voice found by {method} (minimum {self.frontend.min_voice_seconds} s)"
            )
        mel = log_mel(vocals, self.features)
        fps = sr / self.features.hop_length
        keep = np.zeros(len(mel), bool)
        for start, end in regions:
            keep[int(round(start * fps)) : int(round(end * fps))] = True
        return TrackFrames(mel[keep].astype(np.float16), method, seconds, note)
