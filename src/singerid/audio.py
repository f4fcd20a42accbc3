"""Audio input and output: any music file -> mono float32 at 16 kHz, and deterministic audio writing.

PyAV (FFmpeg) is the one decoder and encoder; soxr is the one resampler. Decoding streams packet by packet:
decoded frames gather in blocks of about a second, each downmixed to mono (the mean of its channels) and fed to
a ``soxr.ResampleStream``. `AudioReader` hands the blocks on as they come, so a file of any length is read in
the memory of a block; `load_audio` joins them.

Damaged files: packets that fail to decode are skipped, as FFmpeg's own command line does, and a read error
(e.g. a truncated file) ends the stream early; the audio that did decode is returned. ``AudioError`` is raised
when no audio came out at all, or when more than half of the packets failed (the file is mostly garbage).
A silent file is not an error: callers decide what to do with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import soxr

from singerid.errors import SingerIdError
from singerid.fileio import atomic_path

RESAMPLE_QUALITY = "HQ"
# Fractions of packets that may fail to decode before a file counts as broken.
MAX_BAD_PACKET_FRACTION = 0.5
# Samples per frame handed to the encoder (PyAV re-chunks to the codec's own frame size).
_ENCODE_CHUNK = 65536
_LAYOUTS = {1: "mono", 2: "stereo"}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_PCM_SCALE = {
    np.dtype(np.int16): 2.0**15,
    np.dtype(np.int32): 2.0**31,
    np.dtype(np.int64): 2.0**63,
}


class AudioError(SingerIdError):
    """A file that could not be read as audio; ``str(error)`` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[AudioError], tuple[str | Path, str]]:
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What a file's first audio stream declares (duration in seconds; 0.0 when the container gives none)."""

    sample_rate: int
    channels: int
    duration: float
    codec: str


def _ffmpeg_url(path: Path) -> str:
    """An FFmpeg URL that is always read as a local file, even for names such as ``Artist: Song.mp3``."""
    return "file:" + os.path.abspath(path)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


@contextlib.contextmanager
def _open_audio(path: Path) -> Iterator[tuple[av.container.InputContainer, av.audio.stream.AudioStream]]:
    """Open ``path``; yield its container and first audio stream, with FFmpeg's log captured (kept quiet)."""
    _check_readable(path)
    with av.logging.Capture():
        try:
            container = av.open(_ffmpeg_url(path), metadata_errors="replace")
        except (av.FFmpegError, UnicodeDecodeError) as error:
            raise AudioError(path, f"not a readable audio file ({_describe(error)})") from error
        try:
            if not container.streams.audio:
                raise AudioError(path, "no audio stream")
            yield container, container.streams.audio[0]
        finally:
            container.close()


def _describe(error: Exception) -> str:
    """FFmpeg's message without the file name it repeats."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return str(error.strerror)
    return str(error)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channel count, duration and codec of the first audio stream, from the headers alone."""
    path = Path(path)
    with _open_audio(path) as (container, stream):
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        context = stream.codec_context
        return AudioInfo(
            sample_rate=int(context.sample_rate),
            channels=int(context.channels),
            duration=duration,
            codec=context.name,
        )


def as_mono_float32(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A mono signal as float32 in [-1, 1] (integer samples scaled); ValueError for bad shapes or values."""
    samples = np.asarray(wave)
    if samples.ndim != 1:
        raise ValueError(f"expects a mono (samples,) wave, got shape {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / float(np.iinfo(samples.dtype).max)
    samples = samples.astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):
        raise ValueError("wave contains NaN or infinite samples")
    return samples


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (or FIFO block) as a mono float32 array in [-1, 1]: the mean of its channels."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    rows = data if frame.format.is_planar else data.reshape(-1, channels).T  # views, one row per channel
    mono = rows[0].astype(np.float32)
    for row in rows[1:]:  # summing rows is several times faster than a mean over the strided channel axis
        mono += row
    if data.dtype == np.uint8:
        mono -= 128.0 * channels
        full_scale = 128.0
    else:
        full_scale = _PCM_SCALE.get(data.dtype, 1.0)
    mono *= np.float32(1.0 / (channels * full_scale))
    return mono


class _MonoResampler:
    """Gathers decoded frames in an FFmpeg audio FIFO and converts them a block (about a second) at a time:
    downmix to mono, check that the samples are finite, resample with a soxr stream.

    Decoded frames are small (1152 samples for MP3), so handing each one to numpy would cost more than decoding
    it; the FIFO copies them in C. A change of sample rate, channel count or sample format mid-file ends the block
    and starts a new FIFO and resampler stream. `feed` and `flush` return the converted samples they produced."""

    block_samples = 65536

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self.fifo = av.AudioFifo()
        self.shape: tuple[int, str, str] | None = None  # rate, channel layout, sample format of the FIFO's frames
        self.stream: soxr.ResampleStream | None = None

    def feed(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """Queues a decoded frame; raises ValueError when a block holds NaN or infinity."""
        # PyAV's FIFO does not check a frame's channel layout (a mismatch crashes the process), so the shape of
        # the stream is compared here.
        out = []
        shape = (frame.sample_rate, frame.layout.name, frame.format.name)
        if shape != self.shape:
            out = self.flush()
            self.shape = shape
            self.fifo = av.AudioFifo()
            if frame.sample_rate != self.out_rate:
                self.stream = soxr.ResampleStream(
                    frame.sample_rate, self.out_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
                )
        frame.pts = None  # the FIFO would reject the timestamp gaps of damaged files
        self.fifo.write(frame)
        if self.fifo.samples >= self.block_samples:
            out += self._process(self.fifo.read())
        return out

    def _process(self, block: av.AudioFrame | None) -> list[np.ndarray]:
        if block is None:
            return []
        samples = _frame_to_mono(block)
        if not np.isfinite(samples).all():
            raise ValueError("decoded samples are not finite (NaN or infinity)")
        return [samples if self.stream is None else self.stream.resample_chunk(samples)]

    def flush(self) -> list[np.ndarray]:
        """Converts what the FIFO holds and ends the resampler stream."""
        out = self._process(self.fifo.read())
        self.shape = None
        if self.stream is not None:
            out.append(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
            self.stream = None
        return out


class AudioReader:
    """A file's audio as mono float32 blocks (about a second each) at `sample_rate`, at most `max_seconds`.

    Iterating decodes the file from the start, so a reader can be read several times, and memory stays at a
    block whatever the file's length. After a complete iteration, `samples` is the number of samples yielded and
    `truncated_seconds` how much of the file lay beyond `max_seconds` (0.0 when nothing was cut; counted from
    the remaining packets, which are read but not decoded). Raises AudioError as `load_audio` does; a file that
    is mostly undecodable or yields no audio only raises at the end of the iteration.
    """

    def __init__(self, path: str | Path, sample_rate: int = 16000, *, max_seconds: float | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.samples = 0
        self.truncated_seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        path = self.path
        limit = None if self.max_seconds is None else int(round(self.max_seconds * self.sample_rate))
        resampler = _MonoResampler(self.sample_rate)
        good_packets = bad_packets = 0
        input_seconds = dropped_seconds = 0.0
        last_error: Exception | None = None
        decoded = yielded = 0

        def emit(chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal decoded, yielded
            for chunk in chunks:
                decoded += chunk.size
                if limit is not None:
                    chunk = chunk[: limit - yielded]
                if chunk.size:
                    yielded += chunk.size
                    yield chunk

        with _open_audio(path) as (container, stream):
            packets = container.demux(stream)
            try:
                for packet in packets:
                    try:
                        frames = packet.decode()
                        good_packets += 1
                    except av.FFmpegError as error:
                        bad_packets += 1
                        last_error = error
                        continue
                    for frame in frames:
                        yield from emit(resampler.feed(frame))
                        input_seconds += frame.samples / frame.sample_rate
                    if self.max_seconds is not None and input_seconds >= self.max_seconds:
                        dropped_seconds = input_seconds - self.max_seconds
                        # the rest is counted, not decoded
                        dropped_seconds += sum(float(p.duration * p.time_base) for p in packets if p.duration)
                        break
            except av.FFmpegError as error:
                last_error = error
            except ValueError as error:
                raise AudioError(path, str(error)) from None
        try:
            yield from emit(resampler.flush())
        except ValueError as error:
            raise AudioError(path, str(error)) from None
        total_packets = good_packets + bad_packets
        if bad_packets > MAX_BAD_PACKET_FRACTION * total_packets:
            reason = f"{bad_packets} of {total_packets} packets failed to decode ({_describe(last_error)})"
            raise AudioError(path, reason)
        if decoded == 0:
            detail = f" ({_describe(last_error)})" if last_error is not None else " (zero-length or not audio)"
            raise AudioError(path, f"no audio samples could be decoded{detail}")
        self.samples = yielded
        self.truncated_seconds = round(dropped_seconds, 3)


def load_audio(path: str | Path, sample_rate: int = 16000, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate``, shape (samples,); at most ``max_seconds`` if given.

    Raises AudioError for a missing, empty or non-audio file, a file with no decodable audio, one that is
    mostly undecodable, and one whose samples are not finite. `AudioReader` gives the same samples in blocks.
    """
    return np.concatenate([np.zeros(0, np.float32), *AudioReader(path, sample_rate, max_seconds=max_seconds)])


@dataclass(frozen=True)
class _Encoding:
    container: str
    codec: str
    sample_format: str


def _encoding_for(path: Path, bit_depth: int) -> _Encoding:
    suffix = path.suffix.lower()
    if suffix in (".wav", ".flac"):
        if bit_depth not in (16, 24):
            raise ValueError(f"bit_depth must be 16 or 24 for {suffix}, got {bit_depth}")
        if suffix == ".wav":
            return _Encoding("wav", f"pcm_s{bit_depth}le", "s16" if bit_depth == 16 else "s32")
        return _Encoding("flac", "flac", "s16" if bit_depth == 16 else "s32")
    encodings = {
        ".mp3": _Encoding("mp3", "libmp3lame", "fltp"),
        ".m4a": _Encoding("ipod", "aac", "fltp"),
        # FFmpeg's own Vorbis encoder is experimental and stereo-only, so Ogg files carry Opus.
        ".ogg": _Encoding("ogg", "libopus", "flt"),
        ".opus": _Encoding("ogg", "libopus", "flt"),
    }
    if suffix not in encodings:
        raise ValueError(f"{path}: cannot write {suffix!r}; use one of .wav, .flac, .mp3, .m4a, .ogg, .opus")
    return encodings[suffix]


def _as_channels_first(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim == 1:
        wave = wave[np.newaxis, :]
    if wave.ndim != 2 or wave.shape[0] not in _LAYOUTS:
        raise ValueError(f"wave must be (samples,) or (1 or 2 channels, samples), got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"wave must hold floats in [-1, 1], got dtype {wave.dtype}")
    if wave.shape[1] == 0:
        raise ValueError("wave has no samples")
    if not np.isfinite(wave).all():
        raise ValueError("wave holds NaN or infinite samples")
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _to_sample_format(chunk: np.ndarray, sample_format: str) -> np.ndarray:
    """(channels, samples) float32 -> the array layout PyAV expects for ``sample_format``."""
    if sample_format == "fltp":
        return np.ascontiguousarray(chunk)
    if sample_format == "flt":
        return np.ascontiguousarray(chunk.T).reshape(1, -1)
    # Full scale is 2**(bits - 1), as the decoder divides by it, so integer samples survive a round trip.
    bits = 16 if sample_format == "s16" else 24
    full_scale = 2.0 ** (bits - 1)
    ints = np.clip(np.round(chunk.astype(np.float64) * full_scale), -full_scale, full_scale - 1)
    # s32 carries 24-bit samples in its top bits, as FFmpeg's 24-bit encoders expect.
    ints = ints.astype(np.int16) if sample_format == "s16" else ints.astype(np.int32) << 8
    return np.ascontiguousarray(ints.T).reshape(1, -1)


def write_audio(
    path: str | Path,
    wave: np.ndarray,
    sample_rate: int,
    *,
    bit_depth: int = 16,
    bitrate: int = 128_000,
) -> None:
    """Write ``wave``, (channels, samples) or (samples,) floats in [-1, 1], in the format of the suffix.

    .wav and .flac use ``bit_depth`` (16 or 24); .mp3 (LAME), .m4a (AAC) and .ogg/.opus (Opus) use
    ``bitrate``. Opus only runs at 8/12/16/24/48 kHz, so other rates are resampled to 48 kHz first. The same
    input gives the same bytes (FFmpeg's bit-exact mode drops version strings, random stream serials and
    creation times). The file is written under a temporary name in the same folder, then renamed, so readers
    never see half a file.
    """
    path = Path(path)
    encoding = _encoding_for(path, bit_depth)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = _as_channels_first(wave)
    if encoding.codec == "libopus" and sample_rate not in _OPUS_RATES:
        wave = soxr.resample(wave.T, sample_rate, 48000, quality=RESAMPLE_QUALITY).T
        wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
        sample_rate = 48000
    layout = av.AudioLayout(_LAYOUTS[wave.shape[0]])
    with atomic_path(path) as temporary, av.logging.Capture():
        _encode(temporary, wave, sample_rate, layout, encoding, bit_depth, bitrate)


def _encode(
    path: Path,
    wave: np.ndarray,
    sample_rate: int,
    layout: av.AudioLayout,
    encoding: _Encoding,
    bit_depth: int,
    bitrate: int,
) -> None:
    with av.open(
        _ffmpeg_url(path), "w", format=encoding.container, container_options={"fflags": "+bitexact"}
    ) as container:
        stream = container.add_stream(encoding.codec, rate=sample_rate, layout=layout)
        context = stream.codec_context
        context.format = encoding.sample_format
        context.flags |= av.codec.context.Flags.bitexact
        if encoding.codec == "flac":
            context.options = {"bits_per_raw_sample": str(bit_depth)}
        if encoding.codec in ("libmp3lame", "aac", "libopus"):
            context.bit_rate = bitrate
        if encoding.codec == "libmp3lame":
            # LAME quality 7 is ~2.5x faster than its default; plain (not joint) stereo saves another ~25 %
            context.options = {"compression_level": "7", "joint_stereo": "0"}
        time_base = Fraction(1, sample_rate)
        for start in range(0, wave.shape[1], _ENCODE_CHUNK):
            chunk = wave[:, start : start + _ENCODE_CHUNK]
            frame = av.AudioFrame.from_ndarray(
                _to_sample_format(chunk, encoding.sample_format),
                format=encoding.sample_format,
                layout=layout,
            )
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
