"""singerid: singer identification and verification with deep metric learning.

    from singerid import SingerEncoder
    encoder = SingerEncoder.load("runs/apnl/best.pt")
    embedding = encoder.embed_file("song.mp3")

The public names are imported on first use, so `import singerid` stays light and needs no optional extra
(`SingerLibrary` needs faiss: `pip install singerid[library]`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "SingerEncoder": "singerid.encoder",
    "SingerLibrary": "singerid.library",
    "load_config": "singerid.config",
    "FeatureStore": "singerid.store",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'singerid' has no attribute '{name}'")
