"""Inference: a checkpoint's encoder embeds files, signals and stored frames alike, apart from training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from singerid.audio import AudioError, load_audio
from singerid.encoder import SingerEncoder, window_starts
from singerid.store import FeatureStore


def test_window_starts_cover_the_track() -> None:
    assert window_starts(100, 350, 350) == [0]
    assert window_starts(1000, 350, 350) == [0, 350, 650]
    assert window_starts(700, 350, 175) == [0, 175, 350]


def test_encoder_embeds_files_like_the_store(tiny_run: Path, quick_store: Path, quick_catalog: Path) -> None:
    encoder = SingerEncoder.load(tiny_run / "best.pt")
    store = FeatureStore(quick_store)
    track = store.tracks[0]
    from_file = encoder.embed_file(track.source)  # lyrics found beside the file
    assert from_file.shape == (32,) and abs(np.linalg.norm(from_file) - 1) < 1e-5
    segments = encoder.embed_frames(store.frames(0))
    from_store = segments.mean(0) / np.linalg.norm(segments.mean(0))
    assert float(from_file @ from_store) > 0.99  # same front end; the store keeps float16
    wave = load_audio(track.source, 44100)
    from_wave = encoder.embed_wave(wave, 44100, lrc=Path(track.source).with_suffix(".lrc"))
    assert float(from_wave @ from_file) > 0.99
    with pytest.raises(AudioError, match="nowhere.mp3"):
        encoder.embed_file(quick_catalog / "nowhere.mp3")


def test_inference_never_imports_the_training_code() -> None:
    code = (
        "import sys, singerid.encoder; "
        "loaded = [m for m in ('singerid.train', 'singerid.distributed', 'singerid.sampler') if m in sys.modules]; "
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_windows_are_the_papers_segment_whatever_the_training_crop(tiny_run: Path) -> None:
    encoder = SingerEncoder.load(tiny_run / "best.pt")
    assert encoder.window_frames == 350
    frames = np.random.default_rng(0).standard_normal((1050, 64)).astype(np.float32)
    assert encoder.embed_frames(frames).shape == (3, 32)
    raw = encoder.embed_frames(frames, normalize=False)
    unit = encoder.embed_frames(frames)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, rtol=1e-5, atol=1e-6)
    shorter = SingerEncoder.load(tiny_run / "best.pt", window_frames=200)
    assert shorter.embed_frames(frames).shape == (6, 32)
    with pytest.raises(ValueError, match="window_frames"):
        SingerEncoder.load(tiny_run / "best.pt", window_frames=10)


def test_many_files_embed_in_batches_as_one_by_one(tiny_run: Path, quick_store: Path, tmp_path: Path) -> None:
    """The front end runs in worker processes and the network on windows of several files at once; the result is
    each file's own embedding, in order, with the reason for a file that cannot be used in its place."""
    encoder = SingerEncoder.load(tiny_run / "best.pt", "cpu")
    sources = [Path(t.source) for t in FeatureStore(quick_store).tracks[:5]]
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not audio" * 50)
    paths = [*sources[:2], broken, *sources[2:]]
    results = list(encoder.embed_files(paths, workers=2, batch_size=8))
    assert [path for path, _ in results] == paths
    assert isinstance(results[2][1], AudioError) and "broken.mp3" in str(results[2][1])
    for path, segments in results[:2] + results[3:]:
        np.testing.assert_allclose(
            segments.mean(0) / np.linalg.norm(segments.mean(0)), encoder.embed_file(path), atol=1e-5
        )


def test_devices_resolve_or_say_why_not() -> None:
    from singerid.encoder import EncoderError, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(EncoderError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_onnx_export_matches_pytorch(tiny_run: Path, quick_store: Path, tmp_path: Path) -> None:
    """Unit embeddings from onnxruntime equal PyTorch's (max abs difference < 1e-4) on random input and on a real
    file's windows, with a batch size and a number of frames other than the example's."""
    onnxruntime = pytest.importorskip("onnxruntime")
    import torch

    from singerid.cli import main
    from singerid.encoder import windows

    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_run / "best.pt"), str(out)]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    encoder = SingerEncoder.load(tiny_run / "best.pt", "cpu")
    source = FeatureStore(quick_store).tracks[0].source
    real = windows(encoder.frontend.file_frames(Path(source), Path(source).with_suffix(".lrc")).frames, 350, 175)
    rng = np.random.default_rng(0)
    for batch in (rng.standard_normal((1, 350, 64)), rng.standard_normal((3, 420, 64)), real):
        batch = np.asarray(batch, dtype=np.float32)
        (ours,) = session.run(None, {"features": batch})
        with torch.no_grad():
            reference = encoder.model(torch.from_numpy(batch)).numpy()
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        assert ours.shape == reference.shape and np.abs(unit(ours) - unit(reference)).max() < 1e-4


def test_a_clip_with_little_voice_is_embedded_from_what_there_is(tiny_run: Path, quick_store: Path) -> None:
    """The API embeds a short clip with less voice than `prepare` asks of a track, with a warning, instead of
    refusing it (identify, verify and /identify take such clips); silence is still refused."""
    from singerid.errors import SignalError

    encoder = SingerEncoder.load(tiny_run / "best.pt", "cpu")
    wave = load_audio(FeatureStore(quick_store).tracks[0].source, 16000)
    clip = np.zeros(16000 * 3, np.float32)
    clip[16000 : 16000 + 9600] = wave[32000 : 32000 + 9600]  # 0.6 s of the song in 3 s of silence
    with pytest.warns(UserWarning, match="voice"):
        embedding = encoder.embed_wave(clip, 16000)
    assert embedding.shape == (32,) and abs(np.linalg.norm(embedding) - 1) < 1e-5
    with pytest.raises(SignalError, match="silent"):
        encoder.embed_wave(np.zeros(16000, np.float32), 16000)
