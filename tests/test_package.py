"""The built wheel is the product: it carries its configs and runs the whole chain outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_runs_the_chain_outside_the_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run(build, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("singerid-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "singerid/configs/cpu.yaml" in names and "singerid/configs/paper/apnl-m4.yaml" in names
    assert {"singerid/web/index.html", "singerid/web/app.js", "singerid/web/app.css"} <= set(names)
    site = tmp_path / "site"  # the wheel's own files, ahead of the checkout's on the path
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site), "SINGERID_QUIET": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def singerid(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "singerid", *arguments], env=env, cwd=work, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run(
        [sys.executable, "-c", "import singerid; print(singerid.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site))  # the installed package, not the checkout
    assert "synth" in singerid("--help")
    singerid("synth", "catalog", "--quick", "--workers", "2")
    singerid("prepare", "catalog", "store", "--workers", "2")
    tiny = ["model.channels=[4,8,16,32]", "model.blocks=[1,1,1,1]", "train.epochs=1", "batch.singers=4"]
    singerid("train", "store", "run", "--config", "demo", "--set", *tiny)  # a shipped config, by name
    singerid("enroll", "library", "--checkpoint", "run/best.pt", "--store", "store", "--splits", "test_seen")
    song = next((work / "catalog" / "audio").rglob("*.mp3"))
    assert "s0" in singerid("identify", "library", str(song), "--device", "cpu")
