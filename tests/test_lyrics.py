"""Tests for singerid.lyrics: LRC parsing on real-world quirks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from singerid.lyrics import Lyrics, LyricsError, Phrase, parse_lrc, read_lrc


def spans(lyrics: Lyrics) -> list[tuple[float, float, str]]:
    return [(p.start, p.end, p.text) for p in lyrics.phrases]


def approx_spans(expected: list[tuple[float, float, str]]) -> list:
    return [(pytest.approx(s), pytest.approx(e), text) for s, e, text in expected]


# ------------------------------------------------------------------------------------------- parse_lrc


def test_basic_onsets_end_at_next_onset_and_last_at_max() -> None:
    lyrics = parse_lrc("[00:01.00]one\n[00:03.50]two\n[00:05.25]three\n", max_phrase_seconds=4.0)
    assert spans(lyrics) == approx_spans([(1.0, 3.5, "one"), (3.5, 5.25, "two"), (5.25, 9.25, "three")])
    assert lyrics.skipped_lines == 0
    assert lyrics.tags == {}


def test_bom_and_crlf() -> None:
    lyrics = parse_lrc("\ufeff[ti:Song]\r\n[00:01.00]one\r\n\r\n[00:02.00]two\r\n[00:03.00]\r\n")
    assert spans(lyrics) == approx_spans([(1.0, 2.0, "one"), (2.0, 3.0, "two")])
    assert lyrics.tags == {"ti": "Song"}
    assert lyrics.skipped_lines == 0


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("[00:12.34]", 12.34),
        ("[00:12.345]", 12.345),
        ("[00:12.3]", 12.3),
        ("[00:12]", 12.0),
        ("[75:01.00]", 4501.0),
        ("[1:02.50]", 62.5),
        ("[ 00:12.34 ]", 12.34),
        ("[00:12:34]", 12.34),
    ],
)
def test_stamp_formats(stamp: str, seconds: float) -> None:
    lyrics = parse_lrc(f"{stamp}text\n")
    assert spans(lyrics) == approx_spans([(seconds, seconds + 10.0, "text")])
    assert lyrics.skipped_lines == 0


@pytest.mark.parametrize(
    ("offset", "expected_starts"),
    [("+500", [0.5, 1.5]), ("-250", [1.25, 2.25]), ("0", [1.0, 2.0]), ("+1500", [0.0, 0.5])],
)
def test_offset_subtracted_and_clamped(offset: str, expected_starts: list[float]) -> None:
    # the offset tag comes after the stamps on purpose: it applies to all of them
    lyrics = parse_lrc(f"[00:01.00]a\n[00:02.00]b\n[offset:{offset}]\n", max_phrase_seconds=1.0)
    assert [p.start for p in lyrics.phrases] == pytest.approx(expected_starts)
    assert lyrics.tags["offset"] == offset


def test_offset_shift_cuts_phrases_at_zero() -> None:
    # shifted by 3 s: a at -2 s ends at b (-1 s) and is dropped; b runs from -1 s to c, cut to start at 0
    lyrics = parse_lrc("[offset:3000]\n[00:01.00]a\n[00:02.00]b\n[00:05.00]c\n")
    assert spans(lyrics) == approx_spans([(0.0, 2.0, "b"), (2.0, 12.0, "c")])
    # an intro phrase with its end mark before 0 leaves nothing behind
    lyrics = parse_lrc("[offset:3000]\n[00:01.00]intro\n[00:02.00]\n[00:10.00]a\n[00:12.00]\n")
    assert spans(lyrics) == approx_spans([(7.0, 9.0, "a")])


def test_credit_lines_are_not_sung() -> None:
    text = (
        "[00:00.00]作词 : 林夕\n[00:00.50]作曲：陈小霞\n[00:01.00]编曲 : 某人\n[00:01.50]Composed by Someone\n"
        "[00:02.00]Lyrics: Someone Else\n[00:20.00]第一句歌词\n[00:24.00]\n[00:30.00]Written in the stars\n"
    )
    lyrics = parse_lrc(text)
    assert spans(lyrics) == approx_spans([(20.0, 24.0, "第一句歌词"), (30.0, 40.0, "Written in the stars")])
    assert lyrics.skipped_lines == 0 and not lyrics.instrumental


INSTRUMENTAL_MARKS = ["纯音乐，请欣赏", "此歌曲为没有填词的纯音乐，请您欣赏", "(Instrumental)", "INSTRUMENTAL"]


@pytest.mark.parametrize("mark", INSTRUMENTAL_MARKS)
def test_instrumental_marks(mark: str) -> None:
    alone = parse_lrc(f"[ti:Song]\n[00:00.00]{mark}\n")
    assert alone.phrases == [] and alone.instrumental
    # inside a sung track the mark ends the phrase before it, like an empty end mark
    sung = parse_lrc(f"[00:05.00]la la\n[00:08.00]{mark}\n[00:20.00]la\n[00:22.00]\n")
    assert spans(sung) == approx_spans([(5.0, 8.0, "la la"), (20.0, 22.0, "la")])
    assert not sung.instrumental


def test_malformed_offset_is_skipped_not_applied() -> None:
    lyrics = parse_lrc("[offset:soon]\n[00:01.00]a\n")
    assert lyrics.skipped_lines == 1
    assert "offset" not in lyrics.tags
    assert lyrics.phrases[0].start == pytest.approx(1.0)


def test_several_stamps_on_one_line() -> None:
    text = "[00:10.00][00:30.00]chorus\n[00:20.00]verse\n[00:12.00][00:33.00]\n"
    lyrics = parse_lrc(text)
    assert spans(lyrics) == approx_spans([(10.0, 12.0, "chorus"), (20.0, 30.0, "verse"), (30.0, 33.0, "chorus")])


def test_end_marks_and_max_cap() -> None:
    text = "[00:01.00]short\n[00:02.00]\n[00:05.00]long\n[00:30.00]\n[00:40.00]next\n"
    lyrics = parse_lrc(text, max_phrase_seconds=8.0)
    assert spans(lyrics) == approx_spans([(1.0, 2.0, "short"), (5.0, 13.0, "long"), (40.0, 48.0, "next")])


def test_duration_caps_last_phrase_and_drops_later_stamps() -> None:
    text = "[00:01.00]a\n[00:08.00]b\n[00:09.50]\n[00:12.00]too late\n[00:09.00][00:15.00]c\n"
    lyrics = parse_lrc(text, duration=10.0)
    assert spans(lyrics) == approx_spans([(1.0, 8.0, "a"), (8.0, 9.0, "b"), (9.0, 9.5, "c")])
    assert lyrics.skipped_lines == 1  # only the line whose stamps all lie beyond the end
    lyrics = parse_lrc("[00:01.00]a\n[00:02.00]b\n", duration=4.0)
    assert spans(lyrics) == approx_spans([(1.0, 2.0, "a"), (2.0, 4.0, "b")])


def test_onset_at_duration_gives_no_zero_length_phrase() -> None:
    lyrics = parse_lrc("[00:01.00]a\n[00:05.00]b\n", duration=5.0)
    assert spans(lyrics) == approx_spans([(1.0, 5.0, "a")])
    assert lyrics.skipped_lines == 0


def test_tags_never_become_phrases() -> None:
    text = (
        "[ar:Édith Piaf]\n[ti:La Vie en rose]\n[al:Best Of]\n[by:someone]\n[length: 03:25]\n[re:tool]\n"
        "[ve:1.0]\n[au:Louiguy]\n[#:a comment]\n[00:01.00]Des yeux\n"
    )
    lyrics = parse_lrc(text)
    assert spans(lyrics) == approx_spans([(1.0, 11.0, "Des yeux")])
    assert lyrics.tags == {
        "ar": "Édith Piaf",
        "ti": "La Vie en rose",
        "al": "Best Of",
        "by": "someone",
        "length": "03:25",
        "re": "tool",
        "ve": "1.0",
        "au": "Louiguy",
        "#": "a comment",
    }
    assert lyrics.skipped_lines == 0


def test_junk_lines_are_counted_not_fatal() -> None:
    text = (
        "junk text\n[xx:yy]\n[00:01.00 broken bracket\n00:02.00] other\n[00:75.00]bad seconds\n"
        "[foo:bar]\n\n   \n[00:03.00]kept\n<00:04.00>\nlyrics [00:05.00] in the middle\n"
    )
    lyrics = parse_lrc(text)
    assert spans(lyrics) == approx_spans([(3.0, 13.0, "kept")])
    assert lyrics.skipped_lines == 8  # blank lines are not counted


def test_word_stamps_are_stripped() -> None:
    text = "[00:01.00]<00:01.00>Hello <00:01.50>bright<00:02.10> world\n[00:03.00]<00:03.00> <00:03.40>\n"
    lyrics = parse_lrc(text)
    assert spans(lyrics) == approx_spans([(1.0, 3.0, "Hello bright world")])


def test_identical_onsets_merge() -> None:
    lyrics = parse_lrc("[00:01.00]lead\n[00:01.00]backing\n[00:01.00]lead\n[00:02.00]\n")
    assert spans(lyrics) == approx_spans([(1.0, 2.0, "lead / backing")])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="max_phrase_seconds"):
        parse_lrc("[00:01.00]a", max_phrase_seconds=0)
    with pytest.raises(ValueError, match="duration"):
        parse_lrc("[00:01.00]a", duration=-1.0)


# -------------------------------------------------------------------------------------------- read_lrc


def test_read_cp1252_file_from_awkward_path(tmp_path: Path) -> None:
    folder = tmp_path / "Beyoncé's Greatest – Hits"
    folder.mkdir()
    path = folder / "l'été à Noël.lrc"
    text = "[ar:Beyoncé]\r\n[00:01.00]Café crème — naïve “quote”\r\n[00:04.00]\r\n"
    path.write_bytes(text.encode("cp1252"))
    lyrics = read_lrc(path)
    assert spans(lyrics) == approx_spans([(1.0, 4.0, "Café crème — naïve “quote”")])
    assert lyrics.tags == {"ar": "Beyoncé"}
    assert read_lrc(str(path), max_phrase_seconds=2.0).phrases == [Phrase(1.0, 3.0, "Café crème — naïve “quote”")]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1"])
def test_read_encodings(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / f"song {encoding}.lrc"
    path.write_bytes("[ti:Ça]\n[00:02.50]Ça ira\n".encode(encoding))
    lyrics = read_lrc(path, duration=5.0)
    assert spans(lyrics) == approx_spans([(2.5, 5.0, "Ça ira")])
    assert lyrics.tags == {"ti": "Ça"}


def test_read_undefined_cp1252_bytes_fall_back_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "odd.lrc"
    path.write_bytes(b"[00:01.00]a\x81b\xe9\n")
    assert read_lrc(path).phrases[0].text == "a\x81bé"
    # in Latin-1, byte 0x85 is U+0085 (NEXT LINE): it must not split the lyric line
    path.write_bytes(b"[00:01.00]a\x81b\x85c\n[00:02.00]\n")
    lyrics = read_lrc(path)
    assert spans(lyrics) == approx_spans([(1.0, 2.0, "a\x81b c")]) and lyrics.skipped_lines == 0


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_read_utf16_without_byte_order_mark(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "no bom.lrc"
    path.write_bytes("[ar:Sigur Rós]\r\n[00:01.00]Hoppípolla\r\n[00:03.00]\r\n".encode(encoding))
    lyrics = read_lrc(path)
    assert spans(lyrics) == approx_spans([(1.0, 3.0, "Hoppípolla")]) and lyrics.tags == {"ar": "Sigur Rós"}


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "Dónde está – l'été.lrc"
    with pytest.raises(LyricsError, match="Dónde está – l'été.lrc") as caught:
        read_lrc(path)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(LyricsError, match=str(tmp_path.name)):
        read_lrc(tmp_path)  # a directory is unreadable too


# ----------------------------------------------------------------------------------- properties of parse

_stamp_ms = st.integers(min_value=0, max_value=200_000)
_texts = st.sampled_from(["", "", "la", "oh yeah", "<00:01.00>word", "   ", "Ça va"])
_lines = st.lists(st.tuples(st.lists(_stamp_ms, min_size=1, max_size=3), _texts), max_size=25)


def _render(stamps: list[int], text: str, digits: int) -> str:
    def stamp(ms: int) -> str:
        minutes, rest = divmod(ms, 60_000)
        seconds, millis = divmod(rest, 1000)
        fraction = {0: "", 2: f".{millis // 10:02d}", 3: f".{millis:03d}"}[digits]
        return f"[{minutes:02d}:{seconds:02d}{fraction}]"

    return "".join(stamp(ms) for ms in stamps) + text


@settings(max_examples=150, deadline=None)
@given(
    lines=_lines,
    digits=st.sampled_from([0, 2, 3]),
    max_phrase=st.floats(min_value=0.5, max_value=30.0),
    duration=st.one_of(st.none(), st.floats(min_value=0.0, max_value=250.0)),
    offset=st.integers(min_value=-5000, max_value=5000),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_phrases_are_sorted_disjoint_bounded(
    lines: list, digits: int, max_phrase: float, duration: float | None, offset: int, newline: str
) -> None:
    rendered = [f"[offset:{offset:+d}]"] + [_render(stamps, text, digits) for stamps, text in lines]
    lyrics = parse_lrc(newline.join(rendered), max_phrase_seconds=max_phrase, duration=duration)
    phrases = lyrics.phrases
    for phrase in phrases:
        assert 0.0 <= phrase.start < phrase.end <= phrase.start + max_phrase + 1e-9
        assert phrase.text and phrase.text == phrase.text.strip() and "<" not in phrase.text
        if duration is not None:
            assert phrase.end <= duration
    for before, after in zip(phrases[:-1], phrases[1:], strict=True):
        assert before.start < after.start and before.end <= after.start
    # oracle: one phrase per distinct onset after 0 that carries text and starts before the end; onsets shifted
    # to 0 or before give at most one phrase, cut to start at 0
    unit = {0: 1000, 2: 10, 3: 1}[digits]
    times = [[((ms // unit) * unit - offset) / 1000 for ms in stamps] for stamps, _ in lines]
    onsets = {t for line_times, (_, text) in zip(times, lines, strict=True) if text.strip() for t in line_times}
    if duration is None:
        assert lyrics.skipped_lines == 0
    else:
        onsets = {t for t in onsets if t < duration}
        assert lyrics.skipped_lines == sum(all(t > duration for t in line_times) for line_times in times)
    starts = [p.start for p in phrases]
    assert [s for s in starts if s > 0] == pytest.approx(sorted(t for t in onsets if t > 0))
    assert starts[:1] != [0.0] or any(t <= 0 for t in onsets)


_lrc_tokens = st.sampled_from(list("[]<>:.+-0123456789 \t\r\n\ufeffabc#é٣\u2028") + ["[00:", "[offset:", "]\n"])
_lrc_like_text = st.lists(_lrc_tokens, max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), _lrc_like_text), duration=st.none() | st.just(60.0))
def test_arbitrary_text_never_raises(text: str, duration: float | None) -> None:
    lyrics = parse_lrc(text, duration=duration)
    assert lyrics.skipped_lines >= 0
    assert all(p.end > p.start >= 0 for p in lyrics.phrases)
