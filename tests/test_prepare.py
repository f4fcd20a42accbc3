"""`singerid prepare` on synthetic catalogs in real-world shape: formats, names, missing lyrics, bad files."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import refuse_listing

import singerid.prepare as prepare_module
from singerid.audio import load_audio, write_audio
from singerid.cli import main
from singerid.features import log_mel
from singerid.frontend import BANK_MARGIN_SECONDS, BANK_RUN_SECONDS, BANK_SECONDS, FrontendConfig
from singerid.lyrics import read_lrc
from singerid.prepare import prepare
from singerid.store import FeatureStore, StoreError, merge_stores


def catalog_rows(root: Path) -> list[dict[str, str]]:
    with (root / "metadata.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def messy_tree(quick_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder tree <singer>/<album>/<track>: six formats and rates, lyrics for some, and broken files."""
    root = tmp_path_factory.mktemp("messy") / "My Music (l'été)"
    formats = [
        (".m4a", 44100, 16),
        (".ogg", 48000, 16),
        (".flac", 22050, 24),
        (".wav", 48000, 24),
        (".mp3", 32000, 16),
    ]
    rows = [r for r in catalog_rows(quick_catalog) if r["split"] == "train"][:10]
    for i, row in enumerate(rows):
        suffix, rate, bits = formats[i % len(formats)]
        wave = load_audio(quick_catalog / row["path"], rate)
        channels = np.stack([wave, wave]) if i % 2 else wave
        target = root / f"Singer {row['singer_id']} Ñandú" / "Album 1" / f"{i:02d} It's Tëst{suffix}"
        write_audio(target, channels, rate, bit_depth=bits)
        if i % 3:  # every third track has no lyrics: the detector finds its voice
            lrc = (quick_catalog / row["lrc_path"]).read_text(encoding="utf-8-sig")
            target.with_suffix(".lrc").write_text("\ufeff[re:junk]\r\nnot a lyric line\r\n" + lrc, encoding="utf-8")
    bad = root / "Singer Broken"
    bad.mkdir()
    (bad / "empty.mp3").write_bytes(b"")
    (bad / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "text.flac").write_text("this is not audio")
    write_audio(bad / "silent.wav", np.zeros(16000 * 3, np.float32), 16000)
    good = (root / f"Singer {rows[0]['singer_id']} Ñandú" / "Album 1" / "00 It's Tëst.m4a").read_bytes()
    (bad / "truncated.m4a").write_bytes(good[: len(good) // 50])
    return root


def test_messy_tree_prepares_the_good_and_rejects_the_bad(messy_tree: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    result = prepare(messy_tree, store_dir, workers=2, progress=False)
    store = FeatureStore(store_dir)
    assert len(store) == 10 and result.processed == 15
    methods = {Path(t.source).stem: t.method for t in store.tracks}
    assert [methods[f"{i:02d} It's Tëst"] for i in range(10)] == ["vad" if i % 3 == 0 else "lrc" for i in range(10)]
    assert all(t.voice_seconds > 1.0 for t in store.tracks)
    with (store_dir / "rejects.csv").open(encoding="utf-8") as f:
        rejects = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(rejects) == {"empty.mp3", "noise.mp3", "text.flac", "silent.wav", "truncated.m4a"}
    assert "silent" in rejects["silent.wav"] and "empty" in rejects["empty.mp3"]
    assert all(reason for reason in rejects.values())


def test_store_reads_back_the_log_mel_of_the_phrases(quick_catalog: Path, tmp_path: Path) -> None:
    prepare(quick_catalog, tmp_path / "s", workers=1, progress=False)
    store = FeatureStore(tmp_path / "s")
    rows = {r["track_id"]: r for r in catalog_rows(quick_catalog)}
    for index in (0, 17, 59):
        track = store.tracks[index]
        row = rows[track.track_id]
        assert track.split == row["split"] and track.method == "lrc"
        wave = load_audio(quick_catalog / row["path"])
        mel = log_mel(wave)
        keep = np.zeros(len(mel), bool)
        for p in read_lrc(quick_catalog / row["lrc_path"], duration=len(wave) / 16000).phrases:
            keep[round(p.start * 100) : round(p.end * 100)] = True
        expected = mel[keep]
        assert store.frames(index).shape == expected.shape
        np.testing.assert_allclose(store.crop(index, 5, 100), expected[5:105], atol=0.02)  # float16 storage
        assert store.crop(index, 0, 10 * track.frames).shape == (10 * track.frames, 64)  # short tracks tile
    with pytest.raises(IndexError):
        store.crop(0, store.tracks[0].frames - 10, 350)
    summary = store.summary()
    assert summary["tracks"] == 60 and set(summary["splits"]) == {"train", "val", "test_seen", "test_unseen"}


def test_the_bank_holds_accompaniment_runs_away_from_the_voice(quick_catalog: Path, quick_store: Path) -> None:
    """Every bank frame is a frame of the track's log-mel outside its LRC phrases, at least BANK_MARGIN_SECONDS
    from them, in runs of BANK_RUN_SECONDS."""
    store = FeatureStore(quick_store)
    assert store.has_bank and all(0 < t.bank_frames <= 100 * BANK_SECONDS for t in store.tracks)
    rows = {r["track_id"]: r for r in catalog_rows(quick_catalog)}
    run, margin = round(100 * BANK_RUN_SECONDS), round(100 * BANK_MARGIN_SECONDS)
    for index in (0, 17, 59):
        track = store.tracks[index]
        row = rows[track.track_id]
        wave = load_audio(quick_catalog / row["path"])
        mel = log_mel(wave)
        vocal = np.zeros(len(mel), bool)
        for p in read_lrc(quick_catalog / row["lrc_path"], duration=len(wave) / 16000).phrases:
            vocal[round(p.start * 100) : round(p.end * 100)] = True
        bank = store.bank(index).astype(np.float32)
        distance = np.abs(bank[:, None, :] - mel[None, :, :]).max(axis=2)  # (bank frames, track frames)
        positions = distance.argmin(axis=1)
        assert distance.min(axis=1).max() < 0.05  # each bank frame is a frame of the track (float16 storage) ...
        away = np.abs(positions[:, None] - np.flatnonzero(vocal)[None, :]).min(axis=1)
        assert away.min() >= margin  # ... far from every vocal frame
        assert (np.diff(positions.reshape(-1, run), axis=1) == 1).all()  # in runs of consecutive frames


def interrupt_after(tracks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the next prepare die (as from Ctrl-C) after `tracks` finished tracks."""
    calls = {"n": 0}
    original = prepare_module._process

    def dies(args):
        calls["n"] += 1
        if calls["n"] > tracks:
            monkeypatch.setattr(prepare_module, "_process", original)
            raise KeyboardInterrupt
        return original(args)

    monkeypatch.setattr(prepare_module, "_process", dies)


def test_interrupted_run_resumes_to_the_same_store(quick_catalog: Path, tmp_path: Path, monkeypatch) -> None:
    prepare(quick_catalog, tmp_path / "whole", workers=1, progress=False)
    interrupt_after(25, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare(quick_catalog, tmp_path / "resumed", workers=1, progress=False)
    assert not (tmp_path / "resumed" / "index.json").exists()
    result = prepare(quick_catalog, tmp_path / "resumed", workers=1, progress=False)
    assert (result.skipped, result.processed) == (25, 35)  # nothing finished is redone
    again = prepare(quick_catalog, tmp_path / "resumed", workers=1, progress=False)
    assert again.processed == 0
    whole, resumed = FeatureStore(tmp_path / "whole"), FeatureStore(tmp_path / "resumed")
    assert whole.tracks == resumed.tracks
    for i in range(len(whole)):
        np.testing.assert_array_equal(whole.frames(i), resumed.frames(i))
        np.testing.assert_array_equal(whole.bank(i), resumed.bank(i))


def test_shards_merge_into_the_whole(quick_catalog: Path, tmp_path: Path) -> None:
    for k in (1, 2, 3):
        assert (
            main(
                [
                    "prepare",
                    str(quick_catalog),
                    str(tmp_path / f"part{k}"),
                    "--shard",
                    f"{k}/3",
                    "--workers",
                    "1",
                ]
            )
            == 0
        )
    parts = [FeatureStore(tmp_path / f"part{k}") for k in (1, 2, 3)]
    assert sum(len(p) for p in parts) == 60 and all(len(p) > 5 for p in parts)
    assert main(["store", "merge", str(tmp_path / "merged")] + [str(tmp_path / f"part{k}") for k in (1, 2, 3)]) == 0
    merged = FeatureStore(tmp_path / "merged")
    by_id = {t.track_id: i for i, t in enumerate(merged.tracks)}
    for part in parts:
        for i, t in enumerate(part.tracks):
            np.testing.assert_array_equal(part.frames(i), merged.frames(by_id[t.track_id]))
            np.testing.assert_array_equal(part.bank(i), merged.bank(by_id[t.track_id]))  # the banks follow
    assert merged.has_bank and len(merged.header.bank_shards) == 3
    with pytest.raises(Exception, match="twice|two of"):
        merge_stores(tmp_path / "dup", [tmp_path / "part1", tmp_path / "part1"])


def test_repet_store_and_settings_guard(quick_catalog: Path, tmp_path: Path, capsys) -> None:
    assert main(["prepare", str(quick_catalog), str(tmp_path / "r"), "--separation", "repet", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "60 tracks" in out and "repet" in out
    index = json.loads((tmp_path / "r" / "index.json").read_text(encoding="utf-8"))
    assert index["frontend"]["separation"] == "repet"
    # the same folder with other settings is refused instead of mixing front ends
    assert main(["prepare", str(quick_catalog), str(tmp_path / "r"), "--workers", "1"]) == 2
    assert "other front-end settings" in capsys.readouterr().err


def test_missing_weights_and_paths_are_clear(quick_catalog: Path, tmp_path: Path, capsys) -> None:
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "s")]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken" / "Singer A"
    broken.mkdir(parents=True)
    (broken / "song.mp3").write_bytes(b"not audio at all")
    assert main(["prepare", str(broken.parent), str(tmp_path / "nothing"), "--workers", "1"]) == 2
    assert "no track could be used" in capsys.readouterr().err
    for separation, reason in (("demucs", "weights"), ("spleeter", "unknown separator 'spleeter'")):
        store = tmp_path / separation
        assert main(["prepare", str(quick_catalog), str(store), "--separation", separation, "--workers", "2"]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err
        assert not store.exists()  # nothing is left that a rerun with other settings would trip over


def test_interrupted_parts_keep_their_settings_and_rejects_can_be_retried(
    messy_tree: Path, quick_catalog: Path, tmp_path: Path, monkeypatch
) -> None:
    interrupt_after(3, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare(quick_catalog, tmp_path / "s", FrontendConfig(regions="vad"), workers=1, progress=False)
    with pytest.raises(StoreError, match="interrupted run with other front-end settings"):
        prepare(quick_catalog, tmp_path / "s", workers=1, progress=False)  # would mix VAD and LRC regions

    tree = tmp_path / "tree"
    shutil.copytree(messy_tree, tree)
    prepare(tree, tmp_path / "t", workers=1, progress=False)
    assert len(FeatureStore(tmp_path / "t").header.rejects) == 5
    good = next(tree.rglob("*.flac"))
    shutil.copy(good, tree / "Singer Broken" / "empty.mp3")  # the user fixes one file (FFmpeg probes content)
    again = prepare(tree, tmp_path / "t", workers=1, progress=False, retry_rejects=True)
    assert again.processed == 5 and len(FeatureStore(tmp_path / "t").header.rejects) == 4


def test_a_grown_catalog_keeps_each_stored_singers_role(tmp_path: Path) -> None:
    """Splits drawn by seed over the whole singer set can change when singers are added; a resumed store keeps
    every stored singer's role, so no unseen singer ever gets train tracks."""
    from singerid.synth import SynthConfig, synthesize

    catalog = tmp_path / "catalog"
    synthesize(SynthConfig(singers=9, tracks=2, test_singers=2, test_tracks=7, seconds=6), catalog, progress=False)
    with (catalog / "metadata.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    unseen = sorted({r["singer_id"] for r in rows if r["split"] == "test_unseen"})
    first, later = rows[: len(rows) - 3], rows
    for name, part in (("first.csv", first), ("later.csv", later)):
        with (catalog / name).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in part:  # the later catalog moves an unseen singer's new tracks into train
                moved = name == "later.csv" and row in rows[-3:] and row["singer_id"] == unseen[-1]
                writer.writerow({**row, "split": "train" if moved else row["split"]})
    prepare(catalog / "first.csv", tmp_path / "s", workers=1, progress=False)
    with pytest.warns(UserWarning, match=f"1 singers keep their role in this store .*{unseen[-1]}"):
        prepare(catalog / "later.csv", tmp_path / "s", workers=1, progress=False, other_catalog=True)
    store = FeatureStore(tmp_path / "s")
    assert len(store) + len(store.header.rejects) == len(rows)
    moved = {t.track_id for t in store.tracks} & {r["track_id"] for r in rows[-3:] if r["singer_id"] == unseen[-1]}
    assert moved  # the later tracks are in the store ...
    assert {t.split for t in store.tracks if t.singer_id == unseen[-1]} == {"test_unseen"}  # ... still unseen


def test_parts_of_an_interrupted_run_take_the_resumed_runs_splits(
    quick_catalog: Path, tmp_path: Path, monkeypatch
) -> None:
    """A catalog whose splits change while a run is interrupted: finished parts follow the new catalog."""
    rows = catalog_rows(quick_catalog)
    first, later = tmp_path / "first.csv", tmp_path / "later splits.csv"
    flipped = {"train": "val", "val": "train"}
    for path, split_of in (
        (first, lambda row: row["split"]),
        (later, lambda row: flipped.get(row["split"], row["split"])),
    ):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                paths = {key: str(quick_catalog / row[key]) for key in ("path", "lrc_path") if row[key]}
                writer.writerow({**row, **paths, "split": split_of(row)})
    interrupt_after(30, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare(first, tmp_path / "store", workers=1, progress=False)
    prepare(later, tmp_path / "store", workers=1, progress=False)
    expected = {row["track_id"]: flipped.get(row["split"], row["split"]) for row in rows}
    assert {t.track_id: t.split for t in FeatureStore(tmp_path / "store").tracks} == expected


def child_processes(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            children |= {int(c) for c in (task / "children").read_text().split()}
    return children


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_parallel_prepare_and_its_workers_at_once(quick_catalog: Path, tmp_path: Path, sig) -> None:
    """Ctrl-C or `kill` in the middle of a run with worker processes: the command ends within seconds, says
    how to resume, leaves no worker behind, and the rerun completes the store."""
    store = tmp_path / "store"
    # 8 x 60 tracks: a quiet machine ran 240 in 7.7 s, and once the whole run ended before the signal landed
    catalog = repeated_catalog(quick_catalog, tmp_path / "catalog", 8)
    tracks = len(catalog_rows(catalog.parent))
    command = [sys.executable, "-m", "singerid", "prepare", str(catalog), str(store), "--workers", "2"]
    process = subprocess.Popen([*command, "--separation", "repet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180  # generous: a loaded machine starts workers slowly
    workers: set[int] = set()
    finished: list[Path] = []
    # interrupt once both workers run and a first track is finished: what an interrupt must keep is then known,
    # however slow the machine (sending it as soon as the workers exist raced with the first track)
    while (len(workers) < 2 or not finished) and time.monotonic() < deadline and process.poll() is None:
        if (store / "parts").is_dir():
            workers |= child_processes(process.pid)
            finished = [p for p in (store / "parts").rglob("[!.]*.json") if p.name != "settings.json"]
        time.sleep(0.02)
    assert process.poll() is None and len(workers) >= 2 and finished, "prepare ended or stalled before the test"
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "finished work is kept, rerun the same command to resume" in err
    time.sleep(0.5)
    assert workers and not [pid for pid in workers if is_running(pid)]
    assert not (store / "index.json").exists()
    result = prepare(catalog, store, FrontendConfig(separation="repet"), workers=2, progress=False)
    stored = FeatureStore(store)
    assert result.processed <= tracks - len(finished) and len(stored) + len(stored.header.rejects) == tracks


def repeated_catalog(quick_catalog: Path, folder: Path, times: int) -> Path:
    """A metadata.csv of every quick-catalog track `times` times over, as copies of its files, paths absolute."""
    rows = []
    for copy in range(times):
        (folder / str(copy)).mkdir(parents=True)
        for row in catalog_rows(quick_catalog):
            row = {**row, "track_id": f"{row['track_id']}_{copy}"}
            for key in ("path", "lrc_path"):
                if not row[key]:
                    continue
                source = quick_catalog / row[key]
                row[key] = str(folder / str(copy) / f"{row['track_id']}{source.suffix}")
                shutil.copy2(source, row[key])
            rows.append(row)
    write_rows(folder / "metadata.csv", rows)
    return folder / "metadata.csv"


def small_catalog(quick_catalog: Path, folder: Path, count: int = 6) -> Path:
    """A metadata.csv of the first `count` train tracks of the quick catalog, paths absolute."""
    rows = [r for r in catalog_rows(quick_catalog) if r["split"] == "train"][:count]
    for row in rows:
        for key in ("path", "lrc_path"):
            source = quick_catalog / row[key]
            row[key] = str(folder / source.name)
            shutil.copy2(source, folder / source.name)
    write_rows(folder / "metadata.csv", rows)
    return folder / "metadata.csv"


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_rerun_follows_every_change_of_the_catalog(quick_catalog: Path, tmp_path: Path) -> None:
    """Nothing stale: a relabelled track is relabelled, a replaced audio or lyrics file is prepared again, a dropped
    row is removed, a fixed reject is tried again, and untouched tracks are not redone."""
    (tmp_path / "catalog").mkdir()
    metadata = small_catalog(quick_catalog, tmp_path / "catalog")
    rows = catalog_rows(metadata.parent)
    broken = tmp_path / "catalog" / "broken.mp3"
    broken.write_bytes(b"not audio" * 100)
    write_rows(metadata, [*rows, {**rows[0], "track_id": "fixed later", "path": str(broken), "lrc_path": ""}])
    store = tmp_path / "store"
    first = prepare(metadata, store, progress=False)
    assert first.processed == 7 and len(first.header.tracks) == 6 and len(first.header.rejects) == 1
    before = FeatureStore(store)
    frames_of = {t.track_id: before.frames(i).copy() for i, t in enumerate(before.tracks)}
    notes_of = {t.track_id: t.lyrics_note for t in before.tracks}

    assert prepare(metadata, store, progress=False).processed == 0  # unchanged: nothing to do
    audio = [Path(r["path"]) for r in rows]
    audio[5].touch()  # a new mtime, the same content: not redone
    shutil.copy(audio[1], audio[2])  # track 2's audio replaced by another recording
    lyrics = Path(rows[3]["lrc_path"])
    lyrics.write_text("[00:00.50]a new first line\n" + lyrics.read_text(encoding="utf-8-sig"), encoding="utf-8")
    shutil.copy(audio[0], broken)  # the rejected file fixed
    relabelled = [{**r, "singer_id": "s005"} if r is rows[4] else r for r in rows]
    write_rows(
        metadata,
        [r for r in relabelled if r is not rows[0]]
        + [{**rows[0], "track_id": "fixed later", "path": str(broken), "lrc_path": ""}],
    )

    result = prepare(metadata, store, progress=False)
    assert (result.changed, result.relabelled, result.removed, result.retried) == (2, 1, 1, 1)
    assert result.processed == 3 and result.skipped == 3
    after = FeatureStore(store)
    stored = {t.track_id: (i, t) for i, t in enumerate(after.tracks)}
    assert rows[0]["track_id"] not in stored and "fixed later" in stored and not after.header.rejects
    i, track = stored[rows[4]["track_id"]]
    assert track.singer_id == "s005" and np.array_equal(after.frames(i), frames_of[rows[4]["track_id"]])
    i, _ = stored[rows[2]["track_id"]]
    assert not np.array_equal(after.frames(i), frames_of[rows[2]["track_id"]])  # the new recording's frames
    i, track = stored[rows[3]["track_id"]]
    assert track.lyrics_note != notes_of[rows[3]["track_id"]]  # one phrase more: made from the new lyrics
    i, _ = stored[rows[5]["track_id"]]
    assert np.array_equal(after.frames(i), frames_of[rows[5]["track_id"]])


def test_a_store_of_another_catalog_is_refused_unless_asked(quick_catalog: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = small_catalog(quick_catalog, tmp_path / "a", count=3)
    second = small_catalog(quick_catalog, tmp_path / "b", count=3)  # the same files copied: same ids, new paths
    store = tmp_path / "store"
    prepare(first, store, progress=False)
    with pytest.raises(StoreError, match=f"prepared from {first}, not {second}.*--other-catalog"):
        prepare(second, store, progress=False)
    assert main(["prepare", str(second), str(store), "--other-catalog", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "0 tracks processed, 3 already done" in out  # same content: nothing redone, sources updated
    assert {Path(t.source).parent for t in FeatureStore(store).tracks} == {second.parent}


def test_a_folder_that_cannot_be_read_is_named_in_the_rejects(
    quick_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [r for r in catalog_rows(quick_catalog) if r["split"] == "train"][:4]
    root = tmp_path / "tree"
    for i, row in enumerate(rows):
        target = root / f"Singer {i % 2}" / ("Locked" if i == 3 else "Open") / f"{i}.mp3"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(quick_catalog / row["path"], target)
        shutil.copy(quick_catalog / row["lrc_path"], target.with_suffix(".lrc"))
    locked = root / "Singer 1" / "Locked"
    refuse_listing(monkeypatch, locked)
    result = prepare(root, tmp_path / "store", progress=False)
    assert len(result.header.tracks) == 3
    rejects = list(csv.DictReader((tmp_path / "store" / "rejects.csv").open(encoding="utf-8")))
    assert rejects == [{"file": str(locked), "track_id": "", "reason": "cannot list the folder: Permission denied"}]
    again = prepare(root, tmp_path / "store", progress=False)  # found again, not doubled, not counted as removed
    assert len(again.header.rejects) == 1 and again.removed == 0


def test_a_file_missing_then_present_is_prepared_on_the_next_run(quick_catalog: Path, tmp_path: Path) -> None:
    """A reject whose file could not be read at all (missing) is tried again once the file is there, unasked."""
    rows = catalog_rows(quick_catalog)[:3]
    catalog = tmp_path / "catalog"
    for row in rows:
        for column in ("path", "lrc_path"):
            (catalog / row[column]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(quick_catalog / row[column], catalog / row[column])
    with (catalog / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    late = catalog / rows[1]["path"]
    late.rename(late.with_suffix(".away"))
    first = prepare(catalog, tmp_path / "s", workers=1, progress=False)
    assert len(FeatureStore(tmp_path / "s").header.rejects) == 1 and first.processed == 3
    late.with_suffix(".away").rename(late)
    second = prepare(catalog, tmp_path / "s", workers=1, progress=False)
    assert second.retried == 1 and second.processed == 1
    store = FeatureStore(tmp_path / "s")
    assert not store.header.rejects and len(store) == 3
    assert prepare(catalog, tmp_path / "s", workers=1, progress=False).processed == 0
