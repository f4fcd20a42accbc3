"""Time-stamped lyrics (LRC): the sung phrases of a track, as the paper takes them from its aligned lyrics.

`read_lrc` / `parse_lrc` turn time-stamped lyrics into sorted, non-overlapping `Phrase` intervals; malformed
lines are skipped and counted, never fatal. Tracks without lyrics get their regions from `singerid.vad`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from singerid.errors import SingerIdError

__all__ = [
    "Lyrics",
    "LyricsError",
    "Phrase",
    "parse_lrc",
    "read_lrc",
]


class LyricsError(SingerIdError, ValueError):
    """An LRC file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Phrase:
    """One sung line: [start, end) in seconds and its text (word stamps removed)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Lyrics:
    """Parsed LRC: phrases (sorted, non-overlapping), the number of skipped lines and the ID tags.

    ``instrumental`` is True when the file marks the track as instrumental (e.g. ``[00:00.00]纯音乐，请欣赏`` or
    ``[00:00.00](Instrumental)``) and has no sung phrase."""

    phrases: list[Phrase]
    skipped_lines: int
    tags: dict[str, str]
    instrumental: bool = False

    @property
    def regions(self) -> list[tuple[float, float]]:
        """The phrases as (start, end) intervals."""
        return [(phrase.start, phrase.end) for phrase in self.phrases]


# ---------------------------------------------------------------------------------------------------- LRC

# ID tags of the LRC convention (and common extensions); any other `[word:value]` line is malformed.
KNOWN_TAGS = frozenset(
    {"ar", "al", "ti", "au", "by", "length", "offset", "re", "ve", "#", "la", "lr", "id", "tool", "kana"}
)
# [mm:ss], [mm:ss.x], [mm:ss.xx], [mm:ss.xxx]; minutes may exceed 59; `:` as fraction separator is tolerated.
_STAMP = r"\[\s*([0-9]{1,6}):([0-9]{1,2})(?:[.:]([0-9]{1,3}))?\s*\]"
_STAMP_RE = re.compile(_STAMP)
_LEADING_STAMPS_RE = re.compile(rf"(?:\s*{_STAMP})+")
_WORD_STAMP_RE = re.compile(r"<\s*[0-9]{1,6}:[0-9]{1,2}(?:[.:][0-9]{1,3})?\s*>")
_TAG_RE = re.compile(r"\[\s*([A-Za-z#]+)\s*:(.*)\]")
_OFFSET_RE = re.compile(r"[+-]?[0-9]{1,9}(?:\.[0-9]*)?")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")  # not str.splitlines: that also breaks at U+0085, U+2028, ...
# Stamped lines that are not sung: credits ("作词 : A", "Composed by B", "編曲：C"), which streaming services put
# at the start of a song, over the intro, and instrumental marks ("纯音乐，请欣赏", "(Instrumental)").
_CREDIT_RE = re.compile(
    r"(?:作词|作曲|编曲|词曲|作詞|編曲|制作人|製作人|监制|混音|缩混|录音|母带|和声|配唱|出品|发行|演唱|原唱|"
    r"词|曲|작사|작곡|편곡|lyricist|composer|arranger|producer|lyrics|words|music)\s*[:：]"
    r"|(?:lyrics|words|music|written|composed|arranged|produced|mixed|mastered|recorded)\s+by\b",
    re.IGNORECASE,
)
_INSTRUMENTAL_RE = re.compile(r"[\W_]*instrumental\b.{0,30}|.{0,20}(?:纯音乐|純音樂).{0,20}", re.IGNORECASE)


def _stamp_milliseconds(match: re.Match[str]) -> int | None:
    """Milliseconds of one `[mm:ss.xx]` match, or None when the seconds field is 60 or more."""
    minutes, seconds, fraction = match.groups()
    if int(seconds) >= 60:
        return None
    fraction_ms = int(fraction) * 10 ** (3 - len(fraction)) if fraction else 0
    return int(minutes) * 60_000 + int(seconds) * 1000 + fraction_ms


def parse_lrc(text: str, *, max_phrase_seconds: float = 10.0, duration: float | None = None) -> Lyrics:
    """Parse LRC text into phrases; never raises on malformed content.

    `[mm:ss.xx]text` starts a phrase (several stamps on one line give one phrase per stamp); a stamp with no
    text, or with an instrumental mark, ends the phrase before it; otherwise a phrase ends at the next stamp,
    after at most `max_phrase_seconds`, and never after `duration`. Stamped credit lines ("作词 : A",
    "Composed by B") are not sung and are ignored. `[offset:N]` (ms) is subtracted from every stamp; phrases
    are then cut to start at 0 (those that end before 0 are dropped). Phrases that share an onset are merged
    (texts joined by " / "). Non-blank lines that are neither stamps nor known ID tags, and lines whose stamps
    all lie beyond `duration`, are counted in `skipped_lines`.
    """
    if not (math.isfinite(max_phrase_seconds) and max_phrase_seconds > 0):
        raise ValueError(f"max_phrase_seconds must be a positive number, got {max_phrase_seconds}")
    if duration is not None and not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be a non-negative number or None, got {duration}")

    tags: dict[str, str] = {}
    stamped_lines: list[tuple[list[int], str]] = []  # (stamps in ms before offset, text; "" = end mark)
    skipped = 0
    instrumental = False
    for raw_line in _LINE_BREAK_RE.split(text.lstrip("\ufeff")):
        line = raw_line.strip()
        if not line:
            continue
        stamps_match = _LEADING_STAMPS_RE.match(line)
        if stamps_match:
            stamps = [_stamp_milliseconds(m) for m in _STAMP_RE.finditer(stamps_match.group())]
            if None in stamps:
                skipped += 1
                continue
            body = " ".join(_WORD_STAMP_RE.sub(" ", line[stamps_match.end() :]).split())
            if _CREDIT_RE.match(body):
                continue
            if _INSTRUMENTAL_RE.fullmatch(body):
                instrumental, body = True, ""
            stamped_lines.append(([ms for ms in stamps if ms is not None], body))
            continue
        tag_match = _TAG_RE.fullmatch(line)
        if tag_match and tag_match.group(1).lower() in KNOWN_TAGS:
            key, value = tag_match.group(1).lower(), tag_match.group(2).strip()
            if key == "offset" and not _OFFSET_RE.fullmatch(value):
                skipped += 1
                continue
            tags[key] = value
            continue
        skipped += 1

    offset_ms = float(tags.get("offset", "0"))
    onsets: dict[float, list[str]] = {}
    end_marks: set[float] = set()
    for stamps, body in stamped_lines:
        times = [(ms - offset_ms) / 1000.0 for ms in stamps]
        if duration is not None:
            times = [t for t in times if t <= duration]
            if not times:
                skipped += 1
                continue
        for time in times:
            if not body:
                end_marks.add(time)
            elif body not in onsets.setdefault(time, []):
                onsets[time].append(body)

    boundaries = sorted(set(onsets) | end_marks)
    phrases: list[Phrase] = []
    for index, time in enumerate(boundaries):
        if time not in onsets:
            continue
        end = time + max_phrase_seconds
        if index + 1 < len(boundaries):
            end = min(end, boundaries[index + 1])
        if duration is not None:
            end = min(end, duration)
        start = max(time, 0.0)
        if end > start:
            phrases.append(Phrase(start, end, " / ".join(onsets[time])))
    return Lyrics(phrases=phrases, skipped_lines=skipped, tags=tags, instrumental=instrumental and not phrases)


def _decode_lrc_bytes(data: bytes) -> str:
    """Bytes to text: UTF-8 (with or without BOM), UTF-32/UTF-16 by BOM, UTF-16 without BOM by its zero bytes,
    else cp1252, else latin-1."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="replace")
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return data.decode("utf-32", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    # LRC text is mostly ASCII: in UTF-16 every other byte is then zero (the high byte of each code unit).
    if len(data) >= 4 and data.count(0) >= len(data) // 4:
        odd_zeros, even_zeros = data[1::2].count(0), data[0::2].count(0)
        return data.decode("utf-16-le" if odd_zeros >= even_zeros else "utf-16-be", errors="replace")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_lrc(path: str | Path, **kwargs: float | None) -> Lyrics:
    """Read and parse an LRC file (any common encoding); `kwargs` go to `parse_lrc`.

    Raises LyricsError naming the path when the file is missing or unreadable.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise LyricsError(f"{path}: cannot read lyrics file ({reason})") from error
    return parse_lrc(_decode_lrc_bytes(data), **kwargs)  # type: ignore[arg-type]
