"""The procedural singing corpus: layout, determinism, protocol splits, lyrics that match the voice."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from singerid.audio import load_audio
from singerid.lyrics import read_lrc
from singerid.synth import SynthConfig, draw_singer, plan_catalog, singer_voice, write_track
from tests.conftest import QUICK_CONFIG


def read_rows(root: Path) -> list[dict[str, str]]:
    with (root / "metadata.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_catalog_layout_and_independent_decoder(quick_catalog: Path) -> None:
    rows = read_rows(quick_catalog)
    assert len(rows) == len(plan_catalog(QUICK_CONFIG)) == 4 * 5 + 4 * 10
    for row in rows[::7]:
        info = soundfile.info(quick_catalog / row["path"])
        assert info.samplerate == 44100 and info.channels == 2
        assert abs(info.duration - QUICK_CONFIG.seconds) < 0.1
        assert (quick_catalog / row["lrc_path"]).is_file()
        assert (quick_catalog / "stems" / f"{row['track_id']}.flac").is_file()
    # real-world file names: spaces, apostrophes, accents
    assert any("'" in r["path"] and " " in r["path"] and "é" in r["path"] for r in rows)


def test_splits_follow_the_protocol(quick_catalog: Path) -> None:
    by_singer: dict[str, list[str]] = defaultdict(list)
    for row in read_rows(quick_catalog):
        by_singer[row["singer_id"]].append(row["split"])
    unseen = [s for s, splits in by_singer.items() if "test_unseen" in splits]
    seen_test = [s for s, splits in by_singer.items() if "test_seen" in splits]
    assert len(unseen) == len(seen_test) == QUICK_CONFIG.test_singer_count()
    for singer, splits in by_singer.items():
        if singer in unseen:
            assert set(splits) == {"test_unseen"} and len(splits) >= 10
            continue
        assert splits.count("train") == 4 and splits.count("val") == 1  # 8:2 of 5 tracks
        if singer in seen_test:
            assert splits.count("test_seen") >= 10  # 6 enrollment + 4 query songs, never trained on


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav"])
def test_same_seed_same_bytes(tmp_path: Path, fmt: str) -> None:
    config = SynthConfig(singers=5, tracks=2, test_singers=2, seconds=3.0, format=fmt)
    plans = plan_catalog(config)[:2]
    for run in ("a", "b"):
        for plan in plans:
            write_track(config, plan, tmp_path / run)
    for plan in plans:
        first = (tmp_path / "a" / plan.audio_path).read_bytes()
        assert first == (tmp_path / "b" / plan.audio_path).read_bytes()
        assert (tmp_path / "a" / plan.lrc_path).read_bytes() == (tmp_path / "b" / plan.lrc_path).read_bytes()
    other = SynthConfig(singers=5, tracks=2, test_singers=2, seconds=3.0, format=fmt, seed=1)
    write_track(other, plans[0], tmp_path / "c")
    assert (tmp_path / "c" / plans[0].audio_path).read_bytes() != (tmp_path / "a" / plans[0].audio_path).read_bytes()
    info = soundfile.info(tmp_path / "a" / plans[0].audio_path)
    assert (info.samplerate, info.channels) == (44100, 2)


def test_lyrics_phrases_lie_where_the_voice_is(quick_catalog: Path) -> None:
    rows = read_rows(quick_catalog)
    hop = 160
    for row in rows[::5]:
        stem = load_audio(quick_catalog / "stems" / f"{row['track_id']}.flac")
        frames = stem[: len(stem) // hop * hop].reshape(-1, hop)
        level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
        lyrics = read_lrc(quick_catalog / row["lrc_path"], duration=QUICK_CONFIG.seconds)
        assert lyrics.phrases and lyrics.skipped_lines == 0
        inside = np.zeros(len(level), bool)
        for p in lyrics.phrases:
            inside[int(p.start * 100) : int(p.end * 100)] = True
        peak = level[inside].max()
        assert np.mean(level[inside] > peak - 40) > 0.85, row["track_id"]  # voice sounds in the phrases
        intro = level[: max(0, int(lyrics.phrases[0].start * 100) - 5)]
        assert intro.size == 0 or intro.max() < peak - 80  # the instrumental intro has no voice at all
        for a, b in zip(lyrics.phrases, lyrics.phrases[1:]):
            gap = level[int(a.end * 100) + 180 : int(b.start * 100) - 5]  # after the longest reverb/delay tail
            assert gap.size == 0 or np.median(gap) < peak - 30


def test_singer_identity_is_fixed_and_audible(quick_catalog: Path) -> None:
    truth = json.loads((quick_catalog / "singers.json").read_text(encoding="utf-8"))
    assert truth["singers"]["s001"] == json.loads(json.dumps(asdict(singer_voice(QUICK_CONFIG, 1))))
    voices = list(truth["singers"].values())
    assert all(v != w for i, v in enumerate(voices) for w in voices[i + 1 :])
    # the voice parameters are audible: a stem's long-term spectrum is closer to its own singer's other songs
    spectra: dict[str, list[np.ndarray]] = defaultdict(list)
    for row in read_rows(quick_catalog):
        stem = load_audio(quick_catalog / "stems" / f"{row['track_id']}.flac")
        frames = stem[: len(stem) // 512 * 512].reshape(-1, 512)
        frames = frames[np.mean(frames**2, axis=1) > 1e-6]
        power = np.mean(np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2, axis=0)
        edges = np.geomspace(4, 160, 21).astype(int)  # 20 log-spaced bands, 125 Hz - 5 kHz
        ltas = np.log(np.array([power[a:b].sum() for a, b in zip(edges[:-1], edges[1:])]) + 1e-12)
        spectra[row["singer_id"]].append(ltas - ltas.mean())
    within, between = [], []
    singers = sorted(spectra)
    for i, a in enumerate(singers):
        for b in singers[i:]:
            d = [np.linalg.norm(x - y) for x in spectra[a] for y in spectra[b] if x is not y]
            (within if a == b else between).extend(d)
    assert np.mean(within) < 0.8 * np.mean(between)


def test_difficulty_narrows_the_singer_population() -> None:
    def spread(difficulty: float) -> float:
        rng = np.random.default_rng(0)
        tracts = [draw_singer(rng, difficulty).vibrato_rate for _ in range(400)]
        return float(np.std(tracts))

    assert spread(2.0) < 0.6 * spread(1.0) and spread(0.5) > 1.6 * spread(1.0)
