"""Files made by other means than our own writer, in real-world shape: libsndfile's encoders (MP3, Ogg Vorbis,
Opus, FLAC, AIFF, 24-bit/float/8-bit WAV, 6 channels, 96 kHz), an MP3 with an ID3v2 tag and embedded cover art,
and a whole catalog of them with messy LRC files, through `singerid prepare`."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from singerid.audio import load_audio
from singerid.prepare import prepare
from singerid.store import FeatureStore

# a 1x1 pixel JPEG, for the cover art of the ID3 tag
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a1f"
    "1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001000101011100ffc4001f00"
    "00010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d010203"
    "00041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738"
    "393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2"
    "a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7"
    "f8f9faffda0008010100003f00fbd3ffd9"
)


def id3v2_tag(title: str, artist: str, cover: bytes) -> bytes:
    """An ID3v2.3 tag with UTF-16 title and artist frames and an APIC (front cover) frame."""

    def frame(frame_id: str, body: bytes) -> bytes:
        return frame_id.encode("ascii") + struct.pack(">I", len(body)) + b"\x00\x00" + body

    def text(value: str) -> bytes:
        return b"\x01" + value.encode("utf-16")  # encoding 1: UTF-16 with BOM

    apic = b"\x00" + b"image/jpeg\x00" + b"\x03" + b"cover\x00" + cover
    frames = frame("TIT2", text(title)) + frame("TPE1", text(artist)) + frame("APIC", apic)
    size = len(frames)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + synchsafe + frames


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 330 * t + 3 * np.sin(2 * np.pi * 5.5 * t))
    return np.stack([voice * (0.5 + 0.5 * c / max(channels - 1, 1)) for c in range(channels)], axis=1)


def melody(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A sung line, as far as a detector can tell: notes of changing pitch with vibrato and harmonics, a breath
    between them (one held tone is as much an instrument as a voice)."""
    t = np.arange(int(seconds * rate)) / rate
    note = (t / 0.45).astype(int)
    pitch = 220.0 * 2 ** (np.array([0, 4, 7, 5, 2, 9, 7, 4, 0, 2, 5, 4, 2, 0, 7, 5, 4, 2, 0, 4])[note % 20] / 12)
    phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2 * (t % 0.45 < 0.38)
    return np.stack([voice * (0.5 + 0.5 * c / max(channels - 1, 1)) for c in range(channels)], axis=1)


FORMATS = [  # (file name, soundfile format, subtype, rate, channels)
    ("Ça va (live) - l'été.mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("Ogg Vorbis № 1.ogg", "OGG", "VORBIS", 44100, 2),
    ("Opus song.opus", "OGG", "OPUS", 48000, 2),
    ("Hi-res 96k 24bit.flac", "FLAC", "PCM_24", 96000, 2),
    ("Studio 48k 24-bit.wav", "WAV", "PCM_24", 48000, 2),
    ("float32 mono.wav", "WAV", "FLOAT", 22050, 1),
    ("8 bit unsigned.wav", "WAV", "PCM_U8", 11025, 1),
    ("5.1 surround.wav", "WAV", "PCM_16", 48000, 6),
    ("Apple.aiff", "AIFF", "PCM_16", 44100, 2),
]


@pytest.mark.parametrize(("name", "fmt", "subtype", "rate", "channels"), FORMATS, ids=[f[0] for f in FORMATS])
def test_independently_encoded_files_decode(
    tmp_path: Path, name: str, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    path = tmp_path / "Artist's Folder" / name
    path.parent.mkdir()
    soundfile.write(path, tone(3.0, rate, channels), rate, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert abs(len(wave) / 16000 - 3.0) < 0.1
    spectrum = np.abs(np.fft.rfft(wave[4000:36000]))
    peak = np.fft.rfftfreq(32000, 1 / 16000)[spectrum.argmax()]
    assert 280 < peak < 380  # the vibrato tone around 330 Hz, whatever the channel count


def test_mp3_with_id3_tag_and_cover_art(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp3"
    soundfile.write(plain, tone(3.0, 44100, 2), 44100, format="MP3", subtype="MPEG_LAYER_III")
    tagged = tmp_path / "Björk's Song.mp3"
    tagged.write_bytes(id3v2_tag("Jóga — 1997", "Björk", TINY_JPEG) + plain.read_bytes())
    np.testing.assert_allclose(load_audio(tagged), load_audio(plain), atol=1e-6)  # the cover is not the audio


def test_a_catalog_of_foreign_files_with_messy_lyrics(tmp_path: Path) -> None:
    """Three singers, folders with accents and albums, several formats, LRC with BOM, CRLF, 3-digit stamps,
    offsets, tags and junk lines, and tracks without lyrics."""
    root = tmp_path / "Música del Mundo"
    layouts = [(name, fmt, subtype, rate, min(ch, 2)) for name, fmt, subtype, rate, ch in FORMATS[:5]]
    for s, singer in enumerate(["Sigur Rós", "Mötley Crüe", "Guns N' Roses"]):
        for t, (name, fmt, subtype, rate, channels) in enumerate(layouts):
            path = root / singer / f"Album {t % 2}" / f"{s}{t} {name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(10 * s + t)
            music = melody(12.0, rate, channels) * 0.0
            music[int(2 * rate) : int(9 * rate)] = melody(7.0, rate, channels)  # sung from 2 s to 9 s
            music += 0.01 * rng.standard_normal(music.shape)
            soundfile.write(path, music, rate, format=fmt, subtype=subtype)
            if t % 2 == 0:
                lyrics = "\ufeff[ti:Song]\r\n[ar:" + singer + "]\r\n[offset:+500]\r\nsome junk line\r\n"
                lyrics += "[00:02.500]first phrase\r\n[00:05.250][00:07.000]repeated\r\n[00:09.500]\r\n"
                path.with_suffix(".lrc").write_text(lyrics, encoding="utf-8")
    (root / "Sigur Rós" / "cover.jpg").write_bytes(TINY_JPEG)
    # an instrumental track, as Chinese streaming services mark them; a tone throughout would fool the detector
    instrumental = root / "Sigur Rós" / "Album 0" / "纯音乐 (instrumental).mp3"
    soundfile.write(instrumental, tone(12.0, 44100, 2), 44100, format="MP3", subtype="MPEG_LAYER_III")
    instrumental.with_suffix(".lrc").write_text("[ti:纯音乐]\n[00:00.00]纯音乐，请欣赏\n", encoding="utf-8")
    prepare(root, tmp_path / "store", workers=2, progress=False)
    store = FeatureStore(tmp_path / "store")
    with (tmp_path / "store" / "rejects.csv").open(encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    assert [Path(r["file"]).name for r in rejects] == [instrumental.name], rejects
    assert "instrumental track" in rejects[0]["reason"]
    assert len(store) == 15 and {t.singer_id for t in store.tracks} == {"Sigur Rós", "Mötley Crüe", "Guns N' Roses"}
    for track in store.tracks:
        if track.method == "lrc":  # [offset:+500] moves the stamps 0.5 s earlier: 2.0 .. 9.0 s
            assert track.voice_seconds == pytest.approx(7.0, abs=0.05)
            assert track.lyrics_note == "3 phrases, 1 lines skipped"  # the junk line
        else:  # the detector finds the 7 s of voice
            assert 6.0 < track.voice_seconds < 8.0
            assert track.lyrics_note == "no lyrics file"
    assert store.summary()["detector_reasons"] == {"no lyrics file": 6}
    assert {t.method for t in store.tracks} == {"lrc", "vad"}
