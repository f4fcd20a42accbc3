"""The speech peer (Resemblyzer's GE2E encoder) as a baseline of `evaluate`: the store's windows cut from the audio
again, skipped with one line when resemblyzer is missing or a test track's audio is gone."""

from __future__ import annotations

import builtins
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from singerid.audio import load_audio
from singerid.cli import main
from singerid.encoder import window_starts
from singerid.evaluation import EvaluationOptions, evaluate_run
from singerid.features import FeatureConfig, num_frames
from singerid.peer import PEER_NAME, PeerError, kept_rows, peer_system
from singerid.protocols import ProtocolConfig
from singerid.store import FeatureStore

OPTIONS = EvaluationOptions(protocol=ProtocolConfig(queries_per_singer=3))


def test_kept_rows_are_the_samples_nearest_each_kept_frame() -> None:
    hop, samples = 4, 23
    signal = np.arange(1, samples + 1, dtype=np.float32)
    keep = np.zeros(num_frames(samples, FeatureConfig(hop_length=hop)), bool)  # 6 frames, centred on 0, 4, ..., 20
    keep[[0, 2, 3, 5]] = True
    expected = [[0, 0, 1, 2], [7, 8, 9, 10], [11, 12, 13, 14], [19, 20, 21, 22]]  # frame 5's last sample is past
    for block in (1, 3, 23):  # read in blocks of any size
        blocks = [signal[i : i + block] for i in range(0, samples, block)]
        np.testing.assert_array_equal(kept_rows(blocks, keep, hop), expected)
    np.testing.assert_array_equal(kept_rows([signal], np.zeros(6, bool), hop), np.zeros((0, hop)))


def test_the_peer_scores_the_stores_windows(tiny_run: Path, quick_store: Path, tmp_path: Path) -> None:
    pytest.importorskip("resemblyzer")
    from singerid.peer import SpeechPeer

    logged: list[str] = []
    _, results = evaluate_run(tiny_run, quick_store, OPTIONS, tmp_path / "eval", progress=False, log=logged.append)
    assert not logged
    assert [r.system.kind for r in results] == ["trained", "untrained", "mfcc", "peer"]
    peer = results[-1]
    assert peer.system.name == PEER_NAME and peer.system.scoring == "cosine"
    assert peer.result.singers == results[0].result.singers  # the same trials
    for group in ("seen", "unseen"):
        assert math.isfinite(peer.result.one_on_one[group].eer) and 0 <= peer.result.one_on_one[group].eer <= 1
        assert 0 <= peer.result.top1(group) <= 1
    store = FeatureStore(quick_store)
    (cache,) = (tmp_path / "eval").glob("embeddings-speech peer*.npz")
    embeddings = np.load(cache)
    tests = [t for t in store.tracks if t.split.startswith("test")]
    assert sorted(embeddings.files) == sorted(t.track_id for t in tests)
    for track in tests:
        windows = embeddings[track.track_id]
        assert windows.shape == (len(window_starts(track.frames, 350, 350)), 256)
        np.testing.assert_allclose(np.linalg.norm(windows, axis=1), 1, atol=1e-5)
    assert np.std(np.concatenate([embeddings[t.track_id] for t in tests]), axis=0).max() > 1e-3
    # the samples are the track's audio around its stored frames: 160 per frame, from the same 16 kHz signal
    track = tests[0]
    rows = SpeechPeer(store, 350, "cpu").vocal_rows(track)
    wave = load_audio(track.source)
    assert rows.shape == (track.frames, 160) and np.isin(rows[rows != 0], wave).all()


def test_without_resemblyzer_the_peer_is_skipped(
    tiny_run: Path, quick_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # `import resemblyzer` fails as when not installed
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_run), str(quick_store), "--queries-per-singer", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speech peer skipped: resemblyzer is not installed (pip install 'singerid[peer]')" in printed
    systems = json.loads((out / "results.json").read_text(encoding="utf-8"))["systems"]
    assert [s["system"]["kind"] for s in systems] == ["trained", "untrained", "mfcc"]


def test_a_resemblyzer_that_cannot_import_says_why(quick_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def webrtcvad_without_pkg_resources(name: str, *args: object, **kwargs: object) -> object:
        if name == "resemblyzer":
            raise ModuleNotFoundError("No module named 'pkg_resources'", name="pkg_resources")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", webrtcvad_without_pkg_resources)
    with pytest.raises(PeerError, match="cannot be imported: No module named 'pkg_resources' .* webrtcvad-wheels"):
        peer_system(FeatureStore(quick_store), 350)


def test_a_test_track_without_audio_leaves_the_peer_out(tiny_run: Path, quick_store: Path, tmp_path: Path) -> None:
    """The peer embeds every test track or none, so that every system is scored on the same trials."""
    pytest.importorskip("resemblyzer")
    moved = tmp_path / "store"
    shutil.copytree(quick_store, moved)
    index = json.loads((moved / "index.json").read_text(encoding="utf-8"))
    gone = [t for t in index["tracks"] if t["split"].startswith("test")][-1]
    gone["source"] = str(tmp_path / "gone.mp3")
    (moved / "index.json").write_text(json.dumps(index), encoding="utf-8")
    logged: list[str] = []
    _, results = evaluate_run(tiny_run, moved, OPTIONS, tmp_path / "eval", progress=False, log=logged.append)
    assert [r.system.kind for r in results] == ["trained", "untrained", "mfcc"]
    (line,) = logged
    assert line.startswith(f"speech peer skipped: test track '{gone['track_id']}': {tmp_path / 'gone.mp3'}: missing")
    assert not list((tmp_path / "eval").glob("embeddings-speech peer*"))
