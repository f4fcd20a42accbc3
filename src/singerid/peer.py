"""The speech peer: Resemblyzer's GE2E speaker encoder, the speech-pretrained model a user might pick instead of
singerid, scored as a baseline on the very windows the other systems are scored on (`pip install 'singerid[peer]'`).

The store holds log-mel frames, not audio, and does not record where they lie in time. So the peer runs the store's
own front end again (`TrackFrontend` with the store's recorded FrontendConfig and FeatureConfig, and the lyrics file
whose digest the store recorded) on each test track's source file, which gives the mask of the kept frames, and
reads the same 16 kHz mono signal (separated, when the store is). Kept frame ``i`` (centred on sample ``i * hop``)
contributes the ``hop`` samples nearest its centre, ``[i * hop - hop // 2, i * hop + hop - hop // 2)``: a track's
vocal audio is ``hop_length`` samples per stored frame, and `encoder.windows` cuts it as it cuts the frames (350
frames = 56,000 samples; a track shorter than a window is repeated to fill one).

Each window is volume-normalised as Resemblyzer's `preprocess_wav` does (raised to -30 dBFS, never lowered: its
mel is not logarithmic, so the level matters), not resampled (the reader gives 16 kHz) and not trimmed:
`trim_long_silences` would cut the pauses of a sung phrase and shorten the window, which must stay the 3.5 s the
other systems see. `VoiceEncoder.embed_utterance` averages the embeddings of its 1.6 s partials. The weights ship
inside the resemblyzer wheel: nothing is downloaded.

Every system of a report is scored on the same trials, so the peer embeds every test track or none: a track whose
file is gone or changed since `prepare`, or whose front end now gives another number of frames, raises PeerError,
and the evaluation goes on without the peer.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from singerid.audio import AudioReader
from singerid.catalog import lyrics_beside, scan_catalog
from singerid.encoder import resolve_device, windows
from singerid.errors import SingerIdError
from singerid.frontend import TrackFrontend
from singerid.prepare import file_digest
from singerid.results import SystemInfo
from singerid.store import FeatureStore, StoredTrack

PEER_NAME = "speech peer (Resemblyzer GE2E)"
TARGET_DBFS = -30  # the level of Resemblyzer's preprocess_wav (hparams.audio_norm_target_dBFS)


class PeerError(SingerIdError):
    """The peer cannot run, or cannot embed a store's test tracks as the store holds them; the message says why."""


def _resemblyzer() -> Any:
    """The resemblyzer module; PeerError saying how to install it when it cannot be imported."""
    try:
        with warnings.catch_warnings():  # its own deprecated imports (scipy.ndimage.morphology): not the user's to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
    except ImportError as error:
        if error.name == "resemblyzer":
            raise PeerError("resemblyzer is not installed (pip install 'singerid[peer]')") from None
        hint = " (webrtcvad 2.0.10 needs it, gone from setuptools 81: pip install webrtcvad-wheels)"
        detail = hint if error.name == "pkg_resources" else ""
        raise PeerError(f"resemblyzer cannot be imported: {error}{detail}") from None
    return resemblyzer


def kept_rows(blocks: Iterable[np.ndarray], keep: np.ndarray, hop: int) -> np.ndarray:
    """(kept frames, hop) float32: for each frame that `keep` marks, the `hop` samples of the signal `blocks` make up
    nearest its centre (frame i is centred on sample i * hop), zeros beyond the signal; read block by block."""
    rows = []
    done = 0

    def take(samples: np.ndarray) -> np.ndarray:
        nonlocal done
        count = min(len(samples) // hop, len(keep) - done)
        rows.append(samples[: count * hop].reshape(count, hop)[keep[done : done + count]])
        done += count
        return samples[count * hop :]

    pending = np.zeros(hop // 2, np.float32)
    for block in blocks:
        pending = take(np.concatenate([pending, np.asarray(block, np.float32)]))
    take(np.concatenate([pending, np.zeros((len(keep) - done) * hop, np.float32)]))
    return np.concatenate(rows)


class SpeechPeer:
    """GE2E embeddings of a store's test windows, recomputed from the tracks' audio: an Embedder whose items are
    indices of the store's tracks. PeerError when resemblyzer cannot be imported."""

    metric = "cosine"

    def __init__(self, store: FeatureStore, window_frames: int, device: str = "auto") -> None:
        resemblyzer = _resemblyzer()
        self.store = store
        self.window_frames = window_frames
        self.cache_key = f"resemblyzer{importlib.metadata.version('resemblyzer')}-{TARGET_DBFS}dBFS"
        self._normalize_volume = resemblyzer.normalize_volume
        self.encoder = resemblyzer.VoiceEncoder(device=resolve_device(device), verbose=False)

    @functools.cached_property
    def frontend(self) -> TrackFrontend:
        return TrackFrontend(self.store.header.frontend, self.store.features)

    @functools.cached_property
    def _catalog_lyrics(self) -> dict[str, Path | None]:
        """Lyrics files by track id in the catalog the store was prepared from (none when it cannot be read)."""
        try:
            return {t.track_id: t.lrc_path for t in scan_catalog(self.store.header.catalog).tracks}
        except (SingerIdError, OSError):
            return {}

    def lyrics_file(self, track: StoredTrack) -> Path | None:
        """The lyrics file `prepare` gave the front end: the one beside the audio or in the catalog whose digest the
        store recorded (any, in stores without digests); None when there was none."""
        source = Path(track.source)
        candidates = (lambda: lyrics_beside(source), lambda: self._catalog_lyrics.get(track.track_id))
        for candidate in candidates:
            lrc = candidate()
            if lrc is not None and lrc.is_file() and (not track.audio_digest or file_digest(lrc) == track.lrc_digest):
                return lrc
        if track.lrc_digest:
            raise PeerError(f"{source}: the lyrics file it was prepared with is gone or changed")
        return None

    def vocal_rows(self, track: StoredTrack) -> np.ndarray:
        """(frames, hop) samples of the track's kept frames (see `kept_rows`), by the store's front end run again."""
        source = Path(track.source)
        if track.audio_size >= 0 and (not source.is_file() or source.stat().st_size != track.audio_size):
            raise PeerError(f"{source}: missing, or changed since the store was prepared")
        features, settings = self.store.features, self.store.header.frontend
        lrc = self.lyrics_file(track)
        try:
            made = self.frontend.file_frames(source, lrc)
            reader = AudioReader(source, features.sample_rate, max_seconds=settings.max_track_seconds)
            signal: Iterable[np.ndarray] = reader
            if settings.separation != "none":
                samples = sum(len(block) for block in reader)
                signal = self.frontend.separator.separate_blocks(reader.__iter__, features.sample_rate, samples)
            assert made.keep is not None
            return kept_rows(signal, made.keep, features.hop_length)
        except SingerIdError as error:
            raise PeerError(str(error)) from None

    def embed_rows(self, rows: np.ndarray, hop_frames: int | None = None) -> np.ndarray:
        """(n_windows, 256) unit-norm GE2E embeddings of the windows over a track's kept samples."""
        cut = windows(rows, self.window_frames, hop_frames or self.window_frames)
        embedded = []
        for wave in cut.reshape(len(cut), -1):
            level = self._normalize_volume(wave, TARGET_DBFS, increase_only=True) if np.any(wave) else wave
            embedded.append(self.encoder.embed_utterance(level))
        return np.stack(embedded).astype(np.float32)

    def embed_many(
        self,
        frame_sets: Iterable[int],
        frames_of: Callable[[int], np.ndarray | None],
        *,
        hop_frames: int | None = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        """The windows' embeddings of each store track (by index), over the samples of the frames `frames_of` gives
        (GE2E's embeddings are unit norm, one window at a time, whatever `normalize` and `batch_size`)."""
        for index in frame_sets:
            track, frames = self.store.tracks[index], frames_of(index)
            if frames is None:
                yield index, None
                continue
            try:
                rows = self.vocal_rows(track)
            except PeerError as error:
                raise PeerError(f"test track '{track.track_id}': {error}") from None
            if len(rows) != len(frames):
                raise PeerError(
                    f"test track '{track.track_id}': the front end now keeps {len(rows)} frames of {track.source}, "
                    f"the store holds {len(frames)} (changed since prepare?)"
                )
            yield index, self.embed_rows(rows, hop_frames)


def peer_system(store: FeatureStore, window_frames: int, device: str = "auto") -> tuple[SystemInfo, SpeechPeer]:
    """The speech peer, named for the tables; PeerError when resemblyzer cannot be imported."""
    info = SystemInfo(PEER_NAME, "-", "-", store.header.frontend.separation, "peer", SpeechPeer.metric)
    return info, SpeechPeer(store, window_frames, device)
