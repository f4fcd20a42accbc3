"""Reading catalogs as real collections come: folder trees with hidden files and several formats of one song,
metadata.csv files written on other systems, and the paper's split rule."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from conftest import refuse_listing

from singerid.catalog import CatalogError, assign_splits, read_catalog, scan_folder


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_tree_skips_hidden_files_and_reads_one_format_per_song(tmp_path: Path) -> None:
    root = tmp_path / "Música"
    touch(root / "Björk" / "Post" / "Army of Me.mp3")
    touch(root / "Björk" / "Post" / "Army of Me.flac")  # the same song, lossless: this one is read
    touch(root / "Björk" / "Post" / "Army of Me.LRC")
    touch(root / "Björk" / "Post" / "._Army of Me.mp3")  # macOS resource fork
    touch(root / "Björk" / "Post" / ".DS_Store")
    touch(root / "Björk" / ".hidden album" / "Secret.mp3")
    touch(root / "Björk" / "cover.jpg")
    touch(root / ".Trashes" / "gone.mp3")
    touch(root / "Björk" / "Post" / "@eaDir" / "Army of Me.mp3")  # a Synology NAS's thumbnails and indexes
    touch(root / "D'Angelo" / "Brown Sugar.m4a")
    touch(root / "loose file at the root.mp3")
    with pytest.warns(UserWarning) as warned:
        tracks = scan_folder(root).tracks
    messages = [str(w.message) for w in warned]
    assert any(re.search(r"1 files are another format .*Army of Me\.mp3", m) for m in messages), messages
    assert any("1 audio files directly in the catalog folder belong to no singer" in m for m in messages), messages
    assert [(t.singer_id, t.track_id, t.audio_path.name, t.lrc_path and t.lrc_path.name) for t in tracks] == [
        ("Björk", "Björk/Post/Army of Me", "Army of Me.flac", "Army of Me.LRC"),
        ("D'Angelo", "D'Angelo/Brown Sugar", "Brown Sugar.m4a", None),
    ]


def write_metadata(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=["singer_id", "track_id", "path", "lrc_path", "split"])
        writer.writeheader()
        writer.writerows(rows)


def test_metadata_paths_written_by_other_systems_are_found(tmp_path: Path) -> None:
    nfd_name = unicodedata.normalize("NFD", "Beyoncé")
    audio = touch(tmp_path / nfd_name / "Déjà Vu.mp3")  # as copied from a macOS disk
    lyrics = touch(tmp_path / nfd_name / "Déjà Vu.lrc")
    write_metadata(
        tmp_path / "metadata.csv",
        [
            {"singer_id": "b", "track_id": "", "path": "Beyoncé\\Déjà Vu.mp3", "lrc_path": "Beyoncé/Déjà Vu.lrc "},
            {"singer_id": "b", "track_id": "t2", "path": "missing.mp3", "lrc_path": "", "split": "train"},
        ],
    )
    first, second = read_catalog(tmp_path)
    assert first.audio_path.samefile(audio) and first.lrc_path is not None and first.lrc_path.samefile(lyrics)
    write_metadata(tmp_path / "metadata.csv", [{"singer_id": "b", "path": "Beyoncé/Déjà Vu.mp3", "lrc_path": ""}])
    (found,) = read_catalog(tmp_path)  # no lrc_path: the .lrc beside the audio
    assert found.lrc_path is not None and found.lrc_path.samefile(lyrics)
    assert second.audio_path == tmp_path / "missing.mp3"  # left as written: prepare reports it as not found


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"singer_id": "a", "track_id": "x", "path": "a.mp3", "split": "dev"}], "metadata.csv:2: unknown split 'dev'"),
        (
            [
                {"singer_id": "a", "track_id": "x", "path": "a.mp3"},
                {"singer_id": "b", "track_id": "x", "path": "b.mp3"},
            ],
            "metadata.csv:3: duplicate track_id 'x'",
        ),
        ([{"singer_id": "a", "track_id": "x", "path": " "}], "metadata.csv:2: empty path; every track needs"),
        ([{"singer_id": "", "track_id": "x", "path": ""}], "metadata.csv:2: empty singer_id and path"),
    ],
)
def test_metadata_errors_name_the_line(tmp_path: Path, rows: list[dict[str, str]], message: str) -> None:
    write_metadata(tmp_path / "metadata.csv", rows)
    with pytest.raises(CatalogError, match=message):
        read_catalog(tmp_path)
    (tmp_path / "metadata.csv").write_text("artist,file\nx,y.mp3\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"lacks the columns singer_id, path \(required: singer_id, path; optional"):
        read_catalog(tmp_path)
    (tmp_path / "metadata.csv").write_text("singer_id,track_id,path\nx,t,y.mp3\n", encoding="utf-8")
    assert [t.track_id for t in read_catalog(tmp_path)] == ["t"]  # optional columns may be absent
    with pytest.raises(CatalogError, match="no such file or folder"):
        read_catalog(tmp_path / "nowhere")
    song = touch(tmp_path / "flat" / "song.mp3")
    with pytest.raises(CatalogError, match="an audio file, not a catalog: a catalog is a folder with one folder per"):
        read_catalog(song)
    with (
        pytest.raises(CatalogError, match="no audio tracks found .* the 1 audio files directly in it belong to no"),
        pytest.warns(UserWarning, match="belong to no singer"),
    ):
        read_catalog(song.parent)


def test_split_rule_follows_the_paper(tmp_path: Path) -> None:
    for singer in range(40):
        for track in range(12 if singer % 3 == 0 else 8):
            touch(tmp_path / f"singer {singer:02d}" / f"song {track:02d}.mp3")
    tracks = scan_folder(tmp_path).tracks
    split = assign_splits(tracks, seed=3)
    assert split == assign_splits(tracks, seed=3) and split != assign_splits(tracks, seed=4)
    roles: dict[str, Counter] = {}
    for track in split:
        roles.setdefault(track.singer_id, Counter())[track.split] += 1
    unseen = [s for s, r in roles.items() if r["test_unseen"]]
    seen_test = [s for s, r in roles.items() if r["test_seen"]]
    assert len(unseen) == len(seen_test) == round(0.15 * 40)
    for singer in unseen:
        assert set(roles[singer]) == {"test_unseen"} and roles[singer].total() >= 7
    for singer in seen_test:
        assert roles[singer]["test_seen"] <= 10 and roles[singer]["train"] + roles[singer]["val"] >= 3
    for singer, role in roles.items():
        if singer not in unseen:
            assert role["val"] == round(0.2 * (role["train"] + role["val"]))


def test_small_catalogs_of_ten_track_singers_still_get_test_groups(tmp_path: Path) -> None:
    """16 singers with 10 songs each (the paper's per-singer count): four unseen and four seen test singers,
    each seen one with 7 test songs (6 enrollment + 1 query) and 3 left for training."""
    for singer in range(16):
        for track in range(10):
            touch(tmp_path / f"singer {singer:02d}" / f"song {track}.flac")
    roles: dict[str, Counter] = {}
    for track in assign_splits(scan_folder(tmp_path).tracks, seed=0):
        roles.setdefault(track.singer_id, Counter())[track.split] += 1
    assert sum(1 for r in roles.values() if r["test_unseen"] == 10) == 4
    seen_test = [r for r in roles.values() if r["test_seen"]]
    assert len(seen_test) == 4 and all(r["test_seen"] == 7 and r["train"] + r["val"] == 3 for r in seen_test)


def test_a_singer_is_one_singer_in_any_unicode_form(tmp_path: Path) -> None:
    touch(tmp_path / unicodedata.normalize("NFC", "Sigur Rós") / "Ágætis byrjun.mp3")
    touch(tmp_path / unicodedata.normalize("NFD", "Sigur Rós") / "Takk.mp3")  # copied from a macOS disk
    assert {t.singer_id for t in scan_folder(tmp_path).tracks} == {unicodedata.normalize("NFC", "Sigur Rós")}


def test_lyrics_are_found_beside_their_audio_in_the_usual_namings(tmp_path: Path) -> None:
    folder = tmp_path / "Singer" / "Album"
    touch(folder / "A.mp3"), touch(folder / "A.mp3.lrc")  # as some lyric downloaders name them
    touch(folder / "B.flac"), touch(folder / "B.LRC")
    touch(folder / "C.mp3"), touch(folder / "C.live.lrc")  # the lyrics of another song, C.live.mp3
    touch(folder / "C.live.mp3")
    found = {t.audio_path.name: t.lrc_path and t.lrc_path.name for t in scan_folder(tmp_path).tracks}
    assert found == {"A.mp3": "A.mp3.lrc", "B.flac": "B.LRC", "C.mp3": None, "C.live.mp3": "C.live.lrc"}


def test_a_row_with_too_few_or_too_many_fields_is_an_error_not_a_new_split(tmp_path: Path) -> None:
    header = "singer_id,track_id,path,lrc_path,split\n"
    (tmp_path / "metadata.csv").write_text(header + "a,t1,a.mp3,,val\na,t2,b.mp3\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"metadata.csv:3: 3 fields, but the header has 5"):
        read_catalog(tmp_path)
    (tmp_path / "metadata.csv").write_text(header + "a,t1,a.mp3,,val,extra, more\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"metadata.csv:2: 7 fields, but the header has 5"):
        read_catalog(tmp_path)


def test_unreadable_folders_and_symlink_loops_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from singerid.catalog import scan_catalog

    root = tmp_path / "music"
    touch(root / "Adele" / "21" / "Hello.mp3")
    touch(root / "Blur" / "Parklife" / "Girls.mp3")
    touch(root / "Cher" / "Believe.mp3")
    (root / "Blur" / "Parklife" / "again").symlink_to(root / "Blur", target_is_directory=True)  # a loop
    (root / "Cher" / "linked album").symlink_to(root / "Adele" / "21", target_is_directory=True)  # followed once
    locked = root / "Adele" / "21"
    refuse_listing(monkeypatch, locked)
    catalog = scan_catalog(root)
    found = sorted(t.track_id for t in catalog.tracks)
    assert found == ["Blur/Parklife/Girls", "Cher/Believe", "Cher/linked album/Hello"]  # a linked album is read
    reasons = {part.path: part.reason for part in catalog.unreadable}
    assert len(reasons) == 2 and reasons[locked] == "cannot list the folder: Permission denied"
    assert reasons[root / "Blur" / "Parklife" / "again"] == "a symbolic link loop back to a folder read already"
    with pytest.warns(UserWarning, match="21: not read \\(cannot list the folder: Permission denied\\)"):
        read_catalog(root)
