"""Tests for decoding any file to 16 kHz mono and for writing audio, on signals made here."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile

from singerid.audio import AudioError, AudioInfo, AudioReader, audio_info, load_audio, write_audio

OUT_RATE = 16000
DURATION = 1.0
# (suffix, bit depth) of every format write_audio supports.
FORMATS = [
    (".mp3", 16),
    (".flac", 16),
    (".flac", 24),
    (".wav", 16),
    (".wav", 24),
    (".m4a", 16),
    (".ogg", 16),
]
RATES = [8000, 22050, 44100, 48000]


def tone(frequency: float, sample_rate: int, amplitude: float = 0.5, seconds: float = DURATION) -> np.ndarray:
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * frequency * time)


def length_tolerance(suffix: str, sample_rate: int) -> int:
    """Output samples a codec may add or drop: resampler rounding, plus one codec frame for lossy formats."""
    codec_frame_seconds = {".mp3": 1152 / sample_rate, ".m4a": 2048 / sample_rate, ".ogg": 0.02}
    return 2 + round(codec_frame_seconds.get(suffix, 0.0) * OUT_RATE)


def spectrum_amplitudes(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and sine amplitudes of a Hann-windowed spectrum of the middle of ``wave``."""
    middle = wave[len(wave) // 8 : len(wave) - len(wave) // 8]
    window = np.hanning(len(middle))
    amplitudes = np.abs(np.fft.rfft(middle * window)) * 2 / window.sum()
    return np.fft.rfftfreq(len(middle), 1 / OUT_RATE), amplitudes


def amplitude_at(wave: np.ndarray, frequency: float) -> float:
    frequencies, amplitudes = spectrum_amplitudes(wave)
    near = np.abs(frequencies - frequency) < 15
    return float(amplitudes[near].max())


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize(("suffix", "bit_depth"), FORMATS)
def test_round_trip_mono_tone(tmp_path: Path, suffix: str, bit_depth: int, sample_rate: int) -> None:
    path = tmp_path / f"tone{suffix}"
    write_audio(path, tone(440.0, sample_rate), sample_rate, bit_depth=bit_depth)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - DURATION * OUT_RATE) <= length_tolerance(suffix, sample_rate)
    frequencies, amplitudes = spectrum_amplitudes(wave)
    assert abs(frequencies[amplitudes.argmax()] - 440.0) < 3.0
    assert amplitude_at(wave, 440.0) == pytest.approx(0.5, rel=0.08)


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize(("suffix", "bit_depth"), FORMATS)
def test_round_trip_stereo_downmix_keeps_both_channels(
    tmp_path: Path, suffix: str, bit_depth: int, sample_rate: int
) -> None:
    path = tmp_path / f"two tones{suffix}"
    stereo = np.stack([tone(440.0, sample_rate, 0.4), tone(1000.0, sample_rate, 0.4)])
    write_audio(path, stereo, sample_rate, bit_depth=bit_depth)
    info = audio_info(path)
    assert info.channels == 2
    wave = load_audio(path)
    assert abs(len(wave) - DURATION * OUT_RATE) <= length_tolerance(suffix, sample_rate)
    # The mean of the channels holds each tone at half its amplitude, and nothing louder elsewhere.
    assert amplitude_at(wave, 440.0) == pytest.approx(0.2, rel=0.1)
    assert amplitude_at(wave, 1000.0) == pytest.approx(0.2, rel=0.1)
    frequencies, amplitudes = spectrum_amplitudes(wave)
    elsewhere = (np.abs(frequencies - 440.0) > 30) & (np.abs(frequencies - 1000.0) > 30)
    assert amplitudes[elsewhere].max() < 0.02


@pytest.mark.parametrize(("suffix", "bit_depth"), [(".flac", 16), (".wav", 24)])
def test_opposite_channels_cancel_in_downmix(tmp_path: Path, suffix: str, bit_depth: int) -> None:
    left = tone(440.0, 44100)
    path = tmp_path / f"cancel{suffix}"
    write_audio(path, np.stack([left, -left]), 44100, bit_depth=bit_depth)
    assert np.abs(load_audio(path)).max() < 1e-3


@pytest.mark.parametrize("sample_rate", [22050, 48000])
@pytest.mark.parametrize(("suffix", "bit_depth"), [(".wav", 16), (".wav", 24), (".flac", 16), (".flac", 24)])
@pytest.mark.parametrize("channels", [1, 2])
def test_lossless_files_read_by_soundfile(
    tmp_path: Path, suffix: str, bit_depth: int, sample_rate: int, channels: int
) -> None:
    rng = np.random.default_rng(channels)
    wave = rng.uniform(-0.9, 0.9, size=(channels, sample_rate // 4))
    path = tmp_path / f"noise{suffix}"
    write_audio(path, wave, sample_rate, bit_depth=bit_depth)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (sample_rate, channels, sample_rate // 4)
    assert info.subtype == f"PCM_{bit_depth}"
    data, _ = soundfile.read(str(path), always_2d=True)
    np.testing.assert_allclose(data.T, wave, atol=1.0 / 2 ** (bit_depth - 1))


def test_audio_info_reports_stream(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.flac", tone(440.0, 22050, seconds=2.0), 22050)
    assert audio_info(tmp_path / "a.flac") == AudioInfo(sample_rate=22050, channels=1, duration=2.0, codec="flac")
    write_audio(tmp_path / "a.ogg", tone(440.0, 44100), 44100)
    info = audio_info(tmp_path / "a.ogg")
    # Opus runs at 48 kHz: a 44.1 kHz input is resampled on writing.
    assert (info.sample_rate, info.codec) == (48000, "opus")
    assert info.duration == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("name", ["Sigur Rós/L'été d'amour – live.mp3", "Artist: Song #1?.flac", "ça va.m4a"])
def test_names_with_spaces_apostrophes_accents(tmp_path: Path, name: str) -> None:
    path = tmp_path / "Ünïcode folder" / name
    write_audio(path, tone(440.0, 44100), 44100)
    assert path.is_file()
    assert abs(len(load_audio(path)) - OUT_RATE) <= length_tolerance(path.suffix, 44100)
    assert audio_info(str(path)).sample_rate == 44100


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".ogg", ".m4a"])
def test_write_is_deterministic_and_atomic(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(3)
    wave = np.stack([tone(330.0, 44100), 0.1 * rng.standard_normal(44100)])
    digests = []
    for folder in ("first", "second"):
        path = tmp_path / folder / f"song{suffix}"
        write_audio(path, wave, 44100)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no temporary left behind
    assert digests[0] == digests[1]
    write_audio(tmp_path / "first" / f"song{suffix}", wave[:, :22050], 44100)  # replaces the old file
    assert hashlib.sha256((tmp_path / "first" / f"song{suffix}").read_bytes()).hexdigest() != digests[0]


def test_write_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.aiff"):
        write_audio(tmp_path / "a.aiff", tone(440.0, 16000), 16000)
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "a.wav", np.array([0.0, np.nan]), 16000)
    with pytest.raises(ValueError, match="channels"):
        write_audio(tmp_path / "a.wav", np.zeros((3, 100)), 16000)
    with pytest.raises(ValueError, match="bit_depth"):
        write_audio(tmp_path / "a.flac", np.zeros(100), 16000, bit_depth=8)
    assert list(tmp_path.iterdir()) == []


def test_load_resamples_to_requested_rate_and_limits_length(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    write_audio(path, tone(440.0, 44100, seconds=3.0), 44100)
    assert len(load_audio(path, 8000)) == pytest.approx(24000, abs=2)
    assert len(load_audio(path, max_seconds=1.25)) == 20000
    assert len(load_audio(path, max_seconds=10.0)) == pytest.approx(48000, abs=2)


@pytest.mark.parametrize("suffix", [".flac", ".mp3"])
def test_reader_gives_the_samples_of_load_audio_in_blocks_each_time(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"long{suffix}"
    write_audio(path, np.stack([tone(440.0, 44100, seconds=8.0), tone(660.0, 44100, seconds=8.0)]), 44100)
    reader = AudioReader(path)
    first, second = list(reader), list(reader)  # each iteration decodes the file afresh
    assert len(first) > 4 and max(len(block) for block in first) < 2 * OUT_RATE  # blocks, not the whole
    np.testing.assert_array_equal(np.concatenate(first), load_audio(path))
    np.testing.assert_array_equal(np.concatenate(second), np.concatenate(first))
    assert (reader.samples, reader.truncated_seconds) == (len(load_audio(path)), 0.0)


def test_reader_reports_what_max_seconds_left_out(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    write_audio(path, tone(440.0, 44100, seconds=3.0), 44100)
    reader = AudioReader(path, max_seconds=1.25)
    np.testing.assert_array_equal(np.concatenate(list(reader)), load_audio(path, max_seconds=1.25))
    assert reader.samples == 20000
    assert reader.truncated_seconds == pytest.approx(1.75, abs=0.01)
    with pytest.raises(AudioError, match="not found"):
        list(AudioReader(tmp_path / "missing.flac"))


@pytest.mark.parametrize(
    ("subtype", "channels"), [("PCM_U8", 1), ("PCM_16", 2), ("PCM_32", 1), ("FLOAT", 6), ("DOUBLE", 2)]
)
def test_sample_formats_scale_to_unit_range(tmp_path: Path, subtype: str, channels: int) -> None:
    path = tmp_path / "level.wav"
    soundfile.write(str(path), np.full((16000, channels), 0.5), OUT_RATE, subtype=subtype)
    np.testing.assert_allclose(load_audio(path)[100:-100], 0.5, atol=1e-2)


def test_silence_is_not_an_error(tmp_path: Path) -> None:
    write_audio(tmp_path / "silence.flac", np.zeros(8000), 8000)
    wave = load_audio(tmp_path / "silence.flac")
    assert len(wave) == 16000 and not wave.any()


def assert_audio_error(path: Path, *reasons: str) -> None:
    """load_audio(path) raises AudioError naming the file, with one of ``reasons`` in its reason."""
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert any(reason in caught.value.reason for reason in reasons), caught.value.reason
    assert Path(caught.value.path) == path


def test_errors_name_the_file_and_the_reason(tmp_path: Path) -> None:
    assert_audio_error(tmp_path / "missing.mp3", "not found")
    (tmp_path / "empty.mp3").write_bytes(b"")
    assert_audio_error(tmp_path / "empty.mp3", "empty")
    assert_audio_error(tmp_path, "not a regular file")
    noise = np.random.default_rng(4).bytes(20000)
    (tmp_path / "random.mp3").write_bytes(noise)
    assert_audio_error(tmp_path / "random.mp3", "not a readable audio file")
    (tmp_path / "random's.flac").write_bytes(noise)
    assert_audio_error(tmp_path / "random's.flac", "no audio")
    (tmp_path / "notes.mp3").write_text("not music at all\n" * 50)
    assert_audio_error(tmp_path / "notes.mp3", "not a readable audio file")
    # FFmpeg recognises LRC lyrics as a subtitle file: readable, but without audio.
    (tmp_path / "lyrics.mp3").write_text("[00:01.00] la la la\n" * 50)
    assert_audio_error(tmp_path / "lyrics.mp3", "no audio stream", "not a readable audio file")
    soundfile.write(str(tmp_path / "zero length.wav"), np.zeros(0), OUT_RATE)
    assert_audio_error(tmp_path / "zero length.wav", "no audio")
    soundfile.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan] * 500), OUT_RATE, subtype="FLOAT")
    assert_audio_error(tmp_path / "nan.wav", "not finite")
    with pytest.raises(AudioError, match="empty"):
        audio_info(tmp_path / "empty.mp3")


@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    write_audio(full, np.stack([tone(440.0, 44100, seconds=2.0), tone(660.0, 44100, seconds=2.0)]), 44100)
    data = full.read_bytes()
    # Cut to half: documented partial decode, roughly the first half of the audio.
    half = tmp_path / f"half{suffix}"
    half.write_bytes(data[: len(data) // 2])
    wave = load_audio(half)
    assert 0.7 * OUT_RATE < len(wave) < 1.3 * OUT_RATE
    assert amplitude_at(wave, 440.0) == pytest.approx(0.25, rel=0.1)
    # Cut to 100 bytes: nothing decodes.
    stub = tmp_path / f"stub{suffix}"
    stub.write_bytes(data[:100])
    with pytest.raises(AudioError, match=str(stub)):
        load_audio(stub)


def test_audio_error_pickles_for_worker_processes() -> None:
    error = pickle.loads(pickle.dumps(AudioError("a b.mp3", "empty file")))
    assert (str(error), error.path, error.reason) == ("a b.mp3: empty file", "a b.mp3", "empty file")


def test_corrupt_packets_are_skipped_unless_most_fail(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    write_audio(path, tone(440.0, 44100, seconds=4.0), 44100)
    data = bytearray(path.read_bytes())
    media_start = data.find(b"mdat") + 8  # AAC packets follow the mdat header; the index (moov) comes after them
    media_length = len(data) - 2000 - media_start
    rng = np.random.default_rng(5)
    for fraction, fails in ((0.3, False), (0.9, True)):
        damaged = data.copy()
        damaged[media_start : media_start + int(fraction * media_length)] = rng.bytes(int(fraction * media_length))
        path.write_bytes(bytes(damaged))
        if fails:
            assert_audio_error(path, "packets failed to decode")
        else:
            wave = load_audio(path)
            assert 0.3 * 4 * OUT_RATE < len(wave) < 0.9 * 4 * OUT_RATE
            assert np.isfinite(wave).all()


def test_a_stream_that_changes_rate_and_channels_mid_file(tmp_path: Path) -> None:
    """Concatenated MP3s (as some rippers and radio captures write them): 2 s of 440 Hz stereo at 44.1 kHz,
    then 2 s of 660 Hz mono at 22.05 kHz. Both parts come out at 16 kHz, in order, at their own pitch."""
    first, second = tmp_path / "first.mp3", tmp_path / "second.mp3"
    write_audio(first, np.stack([tone(440.0, 44100, seconds=2.0)] * 2), 44100)
    write_audio(second, tone(660.0, 22050, seconds=2.0), 22050)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    wave = load_audio(joined)
    assert len(wave) == pytest.approx(4 * OUT_RATE, abs=0.1 * OUT_RATE)
    head, tail = wave[: int(1.8 * OUT_RATE)], wave[int(2.3 * OUT_RATE) :]
    assert amplitude_at(head, 440.0) > 0.4 and amplitude_at(head, 660.0) < 0.05
    assert amplitude_at(tail, 660.0) > 0.4 and amplitude_at(tail, 440.0) < 0.05
