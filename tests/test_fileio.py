"""Atomic writes and typed records read from files of other versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from singerid.fileio import atomic_path, record_from_dict, write_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    write_atomically(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half of the new", encoding="utf-8")
        raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_writes_replace_whole_files_and_keep_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub folder" / "model.pt2"
    with atomic_path(target, durable=True) as temporary:
        assert temporary.parent == target.parent and temporary.suffix == ".pt2" and temporary.name.startswith(".")
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    write_atomically(target, b"newer", durable=True)
    assert target.read_bytes() == b"newer" and len(list(target.parent.iterdir())) == 1


@dataclass(frozen=True)
class Settings:
    rate: int
    name: str = "x"
    added_later: float = 1.0


def test_records_of_other_versions_read_with_defaults_and_warnings() -> None:
    assert record_from_dict(Settings, {"rate": 16000}, "old.json") == Settings(16000)
    with pytest.warns(UserWarning, match="new.json: ignoring Settings settings .*'removed'"):
        assert record_from_dict(Settings, {"rate": 8000, "removed": True}, "new.json") == Settings(8000)
    with pytest.raises(ValueError, match="bad.json: Settings lacks rate"):
        record_from_dict(Settings, {"name": "y"}, "bad.json")
