"""Files that other stages read: written atomically, and typed records read back from older versions.

Every file singerid writes for another stage (a store's shards and index, checkpoints, trials, results, reports,
libraries, catalogs) goes through `atomic_path` or `write_atomically`: the content is written under a temporary
name in the same folder and renamed over the target, so a reader sees the old file or the new one, never half of
one. `durable=True` also flushes the file and its folder to disk before and after the rename, for files whose loss
in a power cut would lose finished work.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

Record = TypeVar("Record")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to; renamed over `path` when the block ends without
    an error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        os.replace(temporary, path)
        if durable:
            _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_atomically(path: str | Path, content: bytes | str, *, durable: bool = False) -> Path:
    """Writes bytes, or text as UTF-8, to `path` atomically; returns the path."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_path(path, durable=durable) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def record_from_dict(cls: type[Record], data: Mapping[str, Any], source: str) -> Record:
    """A frozen dataclass from its stored dict, written by this or another singerid version: a field the file
    lacks takes its default (a field added later); a key the class lacks is dropped with a warning (a field
    removed later). A missing field without a default is a ValueError naming `source`."""
    known, required = _layout(cls)
    if data.keys() <= known and required <= data.keys():  # the common case, fast (64,690 tracks in a store)
        return cls(**data)
    unknown = sorted(set(data) - known)
    if unknown:
        warnings.warn(
            f"{source}: ignoring {cls.__name__} settings this singerid does not know: {unknown}", stacklevel=2
        )
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{source}: {cls.__name__} lacks {', '.join(missing)}")
    return cls(**{key: value for key, value in data.items() if key in known})


@functools.cache
def _layout(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """A dataclass's field names, and those without a default."""
    assert is_dataclass(cls)
    every = fields(cls)
    required = (f.name for f in every if f.default is MISSING and f.default_factory is MISSING)
    return frozenset(f.name for f in every), frozenset(required)


def check_format(record: Any, kind: str, version: int, what: str, source: str) -> str | None:
    """Why `record` is not a `kind` file that this singerid reads (any version up to `version`), or None."""
    if not isinstance(record, Mapping) or record.get("format") != kind:
        return f"{source}: not a singerid {what}"
    found = record.get("version")
    if not isinstance(found, int) or found > version:
        return f"{source}: {what} version {found!r}; this singerid reads up to {version}: upgrade it"
    return None
