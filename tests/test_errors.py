"""One error root: the input's faults are SingerIdError and reach the user as one line (CLI), a 4xx (service) or
a reject (prepare); anything else is a bug and shows as one."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import singerid
from singerid.cli import main
from singerid.errors import SingerIdError
from singerid.prepare import prepare
from singerid.registry import RegistryError

LEGACY = Path(__file__).parent / "fixtures" / "d045454"
INTERNAL = {"RequestError"}  # the service's own HTTP answers, never raised to a caller


def test_every_error_class_of_the_package_has_the_one_root() -> None:
    found = {}
    for module in pkgutil.iter_modules(singerid.__path__):
        if module.name == "__main__":
            continue
        loaded = importlib.import_module(f"singerid.{module.name}")
        for name, value in vars(loaded).items():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == loaded.__name__:
                found[name] = value
    assert {"AudioError", "CatalogError", "CheckpointError", "ConfigError", "LibraryError", "StoreError"} <= set(found)
    strays = sorted(name for name, cls in found.items() if name not in INTERNAL and not issubclass(cls, SingerIdError))
    assert strays == []


def test_messages_are_kept_as_written() -> None:
    assert str(RegistryError("unknown loss 'x'; known: a, b")) == "unknown loss 'x'; known: a, b"  # no KeyError quotes
    from singerid.library import UnknownSingerError

    error = UnknownSingerError("singer 'x' is not enrolled")
    assert str(error) == "singer 'x' is not enrolled" and isinstance(error, KeyError)


def test_the_cli_shows_a_bug_as_a_traceback_not_as_a_user_error(monkeypatch, capsys) -> None:
    assert main(["store", "info", str(LEGACY / "store")]) == 0
    capsys.readouterr()

    def broken(self: object) -> dict:
        return {}["splits"]  # a KeyError from a bug

    monkeypatch.setattr("singerid.store.FeatureStore.summary", broken)
    with pytest.raises(KeyError, match="splits"):
        main(["store", "info", str(LEGACY / "store")])
    assert "singerid: error" not in capsys.readouterr().err


def test_a_bug_in_the_front_end_stops_prepare_instead_of_rejecting_tracks(
    quick_catalog: Path, tmp_path: Path, monkeypatch
) -> None:
    def broken(self: object, audio: Path, lrc: Path | None) -> None:
        raise TypeError("a bug in the front end")

    monkeypatch.setattr("singerid.frontend.TrackFrontend.file_frames", broken)
    with pytest.raises(TypeError, match="a bug in the front end"):
        prepare(quick_catalog, tmp_path / "store", workers=1, progress=False)
    assert not (tmp_path / "store" / "rejects.csv").exists()
    assert [p.name for p in (tmp_path / "store").rglob("*.json")] == ["settings.json"]  # no reject records
