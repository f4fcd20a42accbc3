"""An independent test catalog for the vocal-activity detector and the front end, made without singerid's own
synthesizer: espeak-ng voices (pitched and stretched by sox) or, with `--engine flite`, CMU Flite's voices through
ffmpeg (given another vocal-tract length, then pitched, stretched and vibrato'd by ffmpeg's rubberband and vibrato
filters) sing their lyrics word by word to a melody, or speak them, over accompaniment made with sox (plucked,
square, sawtooth or triangle chords, bass, drums; a repeating pattern per section), with instrumental intros,
interludes and outros; mixed here and encoded with ffmpeg in several formats and sample rates. The vocal track as
mixed is kept as the ground truth, and every third track gets an LRC file.

Needs the Debian packages espeak-ng, sox and ffmpeg (`apt-get install espeak-ng sox ffmpeg`; `--engine flite` needs
an ffmpeg built with libflite and librubberband, as Debian's is); installs nothing and is not run by CI. Python: the
standard library and numpy.

    python benchmarks/make_independent_catalog.py OUT [--singers 12] [--short 3] [--long 1] [--seed 0]
        [--engine espeak-ng|flite]

Writes OUT/metadata.csv (singer_id,track_id,path,lrc_path,split; split empty), OUT/audio/<singer>/<track>.<ext>,
OUT/stems/<track_id>.flac (the vocal alone, as mixed, 44.1 kHz) and OUT/truth.json (every track's sung phrases
and settings). Short tracks last 5-15 s, long ones 3-8 min. The same seed gives the same catalog.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 44100
LANGUAGES = ["en-us", "en-gb", "de", "fr-fr", "es", "it", "pt-br", "nl", "sv", "pl", "ro", "cs", "fi", "id"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "Annie", "Andy", "linda", "max"]
FLITE_VOICES = ["awb", "kal16", "rms", "slt"]  # libflite's 16 kHz voices (kal is kal16 at 8 kHz)
ENGINES = ["espeak-ng", "flite"]
LYRICS = (
    "love night fire heart light river home away dream rain sky alone forever morning shadow golden ocean stay "
    "baby tonight falling wild song summer broken hold remember under stars moon road again never believe "
    "sonne liebe amor corazon vida mare notte luna tempo cielo chanson toujours"
)
WORDS = LYRICS.split()
# (extension, ffmpeg codec arguments, sample rate): the formats the catalog rotates through
FORMATS = [
    (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"], 44100),
    (".ogg", ["-c:a", "libvorbis", "-q:a", "5"], 48000),
    (".m4a", ["-c:a", "aac", "-b:a", "160k"], 44100),
    (".flac", ["-c:a", "flac", "-sample_fmt", "s32"], 48000),
    (".wav", ["-c:a", "pcm_s16le"], 22050),
    (".opus", ["-c:a", "libopus", "-b:a", "96k"], 48000),
]
SCALE = np.array([0, 2, 4, 5, 7, 9, 11])  # major scale degrees in semitones
CHORDS = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (9, 12, 16)]  # I IV V vi


@dataclass(frozen=True)
class Singer:
    singer_id: str
    engine: str  # espeak-ng or flite
    voice: str  # espeak-ng voice+variant, or a flite voice
    pitch: int  # espeak-ng base pitch, 0-99; flite: semitones from the voice's own
    timbre: float  # flite: formants and pitch scaled by this factor (a longer or shorter vocal tract); espeak-ng: 1
    speed: int  # espeak-ng: words per minute; flite: tempo speed / 115 (x 1.3 when spoken)
    stretch: float  # tempo factor of sung words, sox's or rubberband's (< 1: longer vowels)
    sings: float  # probability that a phrase is sung (else spoken)
    reverb: int  # sox reverberance of the vocal, 0 for none


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        data = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
        return data.reshape(-1, f.getnchannels()).mean(axis=1)


def write_wav(path: Path, samples: np.ndarray) -> None:
    """(channels, n) or (n,) floats in [-1, 1] -> 16-bit WAV at RATE."""
    samples = np.atleast_2d(samples)
    ints = np.clip(np.round(samples.T * 32767), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[0])
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(ints.tobytes())


def sox_sound(work: Path, name: str, *effects: str) -> np.ndarray:
    """A sound made by `sox -n` with the given synth and effect arguments, mono at RATE."""
    path = work / f"{name}.wav"
    if not path.exists():
        run("sox", "-n", "-r", str(RATE), "-b", "16", str(path), *effects, "remix", "-")
    return read_wav(path)


class Voice:
    """One singer's words, rendered by the singer's engine, trimmed, and pitched and stretched where sung (cached per
    word and note): espeak-ng's words are sung by sox, flite's by ffmpeg's rubberband and vibrato filters."""

    def __init__(self, singer: Singer, work: Path) -> None:
        self.singer = singer
        self.work = work
        self.cache: dict[tuple[str, int, bool], np.ndarray] = {}

    def word(self, text: str, semitones: int, sung: bool) -> np.ndarray:
        key = (text, semitones, sung)
        if key not in self.cache:
            raw, out = self.work / "word.wav", self.work / "word-out.wav"
            render = self.espeak if self.singer.engine == "espeak-ng" else self.flite
            singing = render(text, semitones, sung, raw)
            effects = ["rate", str(RATE), "silence", "1", "0.01", "0.3%", "reverse", "silence", "1", "0.01", "0.3%"]
            run("sox", str(raw), "-b", "16", str(out), *effects, "reverse", *singing)
            self.cache[key] = read_wav(out)
        return self.cache[key]

    def espeak(self, text: str, semitones: int, sung: bool, raw: Path) -> list[str]:
        """Speaks the word into `raw`; returns the sox effects that sing it."""
        speed = self.singer.speed if sung else self.singer.speed + 50
        run("espeak-ng", "-v", self.singer.voice, "-s", str(speed), "-p", str(self.singer.pitch), "-w", str(raw), text)
        if not sung:
            return []
        return ["pitch", str(100 * semitones), "tempo", "-s", f"{self.singer.stretch:.2f}", "tremolo", "5.5", "15"]

    def flite(self, text: str, semitones: int, sung: bool, raw: Path) -> list[str]:
        """Speaks (or sings) the word into `raw` with the singer's timbre; sox has nothing to add."""
        singer = self.singer
        filters = [f"rubberband=pitch={singer.timbre:.3f}:formant=shifted"]
        tempo = singer.speed / 115 * (singer.stretch if sung else 1.3)  # sung words last longer
        shift = 2 ** ((singer.pitch + (semitones if sung else 0)) / 12)
        filters.append(f"rubberband=pitch={shift:.4f}:tempo={tempo:.3f}:formant=preserved")
        if sung:
            filters.append("vibrato=f=5.2:d=0.12")
        source = f"flite=text='{text}':voice={singer.voice}"  # WORDS hold letters only: nothing to escape
        run("ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", source, "-af", ",".join(filters), str(raw))
        return []


def accompaniment_pattern(rng: np.random.Generator, work: Path, key_hz: float, beat: float, style: int) -> np.ndarray:
    """Four bars of chords, bass and drums: the unit a section repeats."""
    bar = 4 * beat
    pattern = np.zeros(round(4 * bar * RATE) + RATE)
    kinds = ["pluck", "square", "sawtooth", "triangle", "trapezium"]
    kind = kinds[(style + int(rng.integers(len(kinds)))) % len(kinds)]
    filters = {"pluck": [], "square": ["lowpass", "1800"], "sawtooth": ["lowpass", "2500"]}
    for index, chord in enumerate(CHORDS[: 4 - (style % 2)] + CHORDS[: style % 2]):
        notes = [f"{key_hz * 2 ** (s / 12):.2f}" for s in chord]
        length = bar if kind != "pluck" else beat
        synth = [part for note in notes for part in (kind, note)]
        sound = sox_sound(
            work, f"chord-{kind}-{'-'.join(notes)}-{length:.3f}",
            "synth", f"{length:.3f}", *synth, "delay", "0", "0.015", "0.03", *filters.get(kind, []),
            "fade", "0.01", f"{length:.3f}", f"{0.15 * length:.3f}", "vol", "0.25",
        )  # fmt: skip
        for repeat in range(round(bar / length)):
            add(pattern, sound, index * bar + repeat * length)
        if style == 2:  # the chorus adds a sustained pad an octave up
            pad = sox_sound(
                work, f"pad-{'-'.join(notes)}-{bar:.3f}", "synth", f"{bar:.3f}",
                *[part for note in notes for part in ("sawtooth", f"{2 * float(note):.2f}")],
                "lowpass", "1200", "fade", "0.1", f"{bar:.3f}", "0.1", "vol", "0.12",
            )  # fmt: skip
            add(pattern, pad, index * bar)
        bass_hz = f"{key_hz / 2 * 2 ** (chord[0] / 12):.2f}"
        bass = sox_sound(
            work, f"bass-{bass_hz}-{beat:.3f}", "synth", f"{beat:.3f}", "sawtooth", bass_hz, "lowpass", "300",
            "fade", "0.005", f"{beat:.3f}", f"{0.2 * beat:.3f}", "vol", "0.5",
        )  # fmt: skip
        for step in range(4):
            add(pattern, bass, index * bar + step * beat)
    kick = sox_sound(work, "kick", "synth", "0.25", "sine", "150:45", "fade", "0", "0.25", "0.2", "vol", "0.9")
    snare = sox_sound(work, "snare", "synth", "0.18", "pinknoise", "highpass", "800", "fade", "0", "0.18", "0.16")
    hat = sox_sound(work, "hat", "synth", "0.06", "whitenoise", "highpass", "6000", "fade", "0", "0.06", "0.05")
    if style != 0:  # the intro pattern has no drums
        for step in range(16):
            add(pattern, kick if step % 2 == 0 else 0.5 * snare, step * beat)
            add(pattern, 0.3 * hat, step * beat + beat / 2)
    write_wav(work / "pattern.wav", 0.5 * pattern / max(np.abs(pattern).max(), 1e-9))
    run("sox", str(work / "pattern.wav"), str(work / "room.wav"), "reverb", "40")
    return read_wav(work / "room.wav")[: round(4 * bar * RATE)]


def add(out: np.ndarray, sound: np.ndarray, at: float) -> None:
    start = round(at * RATE)
    if start < len(out):
        piece = sound[: len(out) - start]
        out[start : start + len(piece)] += piece


def render_track(rng: np.random.Generator, singer: Singer, work: Path, voice: Voice, seconds: float) -> dict:
    """The mixture (2, n), the vocal as mixed (n,) and the sung phrases of one track."""
    beat = 60.0 / rng.uniform(72, 132)
    key_hz = 110.0 * 2 ** (int(rng.integers(0, 12)) / 12)
    n = round(seconds * RATE)
    music = np.zeros(n)
    vocal = np.zeros(n)
    short = seconds < 30
    intro = rng.uniform(1.0, 3.0) if short else rng.uniform(6.0, 16.0)
    outro = rng.uniform(0.5, 1.5) if short else rng.uniform(4.0, 10.0)
    sections = [(0.0, intro, 0)]  # (start, end, pattern style): 0 intro/interlude, 1 verse, 2 chorus
    phrases: list[tuple[float, float, str]] = []
    t, style, sung_in_section = intro, 1, 0
    note = int(rng.integers(0, 7))
    while t < seconds - outro - 1.0:
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(3, 8)))]
        sung = rng.random() < singer.sings
        start = t
        for text in words:
            note = int(np.clip(note + rng.choice([-2, -1, 0, 1, 2]), 0, 9))
            semitones = int(SCALE[note % 7] + 12 * (note // 7)) - 5
            sound = voice.word(text, semitones, sung)
            if t + len(sound) / RATE > seconds - outro:
                break
            add(vocal, sound, t)
            t += len(sound) / RATE + rng.uniform(0.0, 0.12)
        if t > start:
            phrases.append((start, t, " ".join(words)))
        sung_in_section += 1
        t += rng.uniform(0.3, 2.0)
        if not short and sung_in_section >= rng.integers(4, 7):  # an instrumental interlude, then a new section
            sections.append((sections[-1][1], t, style))
            interlude = rng.uniform(8.0, 20.0)
            sections.append((t, t + interlude, 0))
            t += interlude
            style, sung_in_section = 3 - style, 0
    sections.append((sections[-1][1], seconds, style))
    patterns = {s: accompaniment_pattern(rng, work, key_hz, beat, s) for s in {s for _, _, s in sections}}
    for start, end, style in sections:
        begin, stop = round(start * RATE), min(round(end * RATE), n)
        if stop > begin:
            music[begin:stop] = np.resize(patterns[style], stop - begin)
    if singer.reverb:
        write_wav(work / "dry.wav", vocal / max(np.abs(vocal).max(), 1e-9) * 0.5)
        run("sox", str(work / "dry.wav"), str(work / "wet.wav"), "reverb", str(singer.reverb))
        vocal = np.pad(read_wav(work / "wet.wav"), (0, n))[:n]
    sung_mask = np.zeros(n, bool)
    for start, end, _ in phrases:
        sung_mask[round(start * RATE) : round(end * RATE)] = True
    ratio_db = rng.uniform(-4.0, 8.0)
    vocal *= (
        np.sqrt(np.mean(music**2) + 1e-12) * 10 ** (ratio_db / 20) / np.sqrt(np.mean(vocal[sung_mask] ** 2) + 1e-12)
    )
    pan = rng.uniform(0.3, 0.7)
    mix = np.stack([vocal + 2 * pan * music, vocal + 2 * (1 - pan) * music])
    scale = 10 ** (-1 / 20) / np.abs(mix).max()
    return {"mix": mix * scale, "vocal": vocal * scale, "phrases": phrases, "ratio_db": ratio_db, "intro": intro}


def lrc_text(phrases: list[tuple[float, float, str]]) -> str:
    def stamp(seconds: float) -> str:
        return f"[{int(seconds // 60):02d}:{seconds % 60:05.2f}]"

    return "".join(f"{stamp(start)}{text}\n{stamp(end)}\n" for start, end, text in phrases)


def draw_singers(rng: np.random.Generator, count: int, engine: str) -> list[Singer]:
    if engine == "flite":
        voices = [FLITE_VOICES[index % len(FLITE_VOICES)] for index in range(count)]
    else:
        languages = rng.permutation(LANGUAGES)
        variants = rng.permutation(VARIANTS)
        voices = [f"{languages[index % len(languages)]}+{variants[index % len(variants)]}" for index in range(count)]
    singers = []
    for index, voice in enumerate(voices):
        if engine == "flite":
            pitch, timbre = int(rng.integers(-4, 5)), float(rng.uniform(0.84, 1.2))
        else:
            pitch, timbre = int(rng.integers(25, 80)), 1.0
        singers.append(
            Singer(
                singer_id=f"x{index:02d}",
                engine=engine,
                voice=voice,
                pitch=pitch,
                timbre=timbre,
                speed=int(rng.integers(90, 140)),
                stretch=float(rng.uniform(0.55, 0.85)),
                sings=float(rng.choice([1.0, 0.85, 0.5])),
                reverb=int(rng.choice([0, 0, 30, 60])),
            )
        )
    return singers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--singers", type=int, default=12)
    parser.add_argument("--short", type=int, default=3, help="short tracks (5-15 s) per singer")
    parser.add_argument("--long", type=int, default=1, help="long tracks (3-8 min) per singer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=ENGINES, default="espeak-ng", help="the voices' synthesizer")
    args = parser.parse_args()
    tools = ("sox", "ffmpeg") + (("espeak-ng",) if args.engine == "espeak-ng" else ())
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        parser.error(f"needs {', '.join(missing)} (Debian: apt-get install espeak-ng sox ffmpeg)")
    if args.engine == "flite":
        filters = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout.split()
        if not {"flite", "rubberband"} <= set(filters):
            parser.error("--engine flite needs an ffmpeg built with libflite and librubberband (Debian's is)")
    rng = np.random.default_rng(args.seed)
    rows, truth = [], {}
    for singer in draw_singers(rng, args.singers, args.engine):
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            voice = Voice(singer, work)
            lengths = [rng.uniform(5, 15) for _ in range(args.short)] + [
                rng.uniform(180, 480) for _ in range(args.long)
            ]
            for index, seconds in enumerate(lengths):
                track_id = f"{singer.singer_id}_t{index:02d}"
                track = render_track(rng, singer, work, voice, seconds)
                suffix, codec, rate = FORMATS[len(rows) % len(FORMATS)]
                audio = args.out / "audio" / singer.singer_id / f"{track_id}{suffix}"
                stem = args.out / "stems" / f"{track_id}.flac"
                audio.parent.mkdir(parents=True, exist_ok=True)
                stem.parent.mkdir(parents=True, exist_ok=True)
                write_wav(work / "mix.wav", track["mix"])
                write_wav(work / "vocal.wav", track["vocal"])
                run("ffmpeg", "-y", "-v", "error", "-i", str(work / "mix.wav"), "-ar", str(rate), *codec, str(audio))
                run("ffmpeg", "-y", "-v", "error", "-i", str(work / "vocal.wav"), "-c:a", "flac", str(stem))
                lrc = ""
                if len(rows) % 3 == 0:
                    lrc_path = audio.with_suffix(".lrc")
                    lrc_path.write_text(lrc_text(track["phrases"]), encoding="utf-8")
                    lrc = str(lrc_path.relative_to(args.out))
                rows.append([singer.singer_id, track_id, str(audio.relative_to(args.out)), lrc, ""])
                truth[track_id] = {
                    "seconds": seconds,
                    "phrases": track["phrases"],
                    "ratio_db": track["ratio_db"],
                    "intro": track["intro"],
                    "singer": asdict(singer),
                }
                print(f"{track_id}: {seconds:.1f} s {suffix}, {len(track['phrases'])} phrases", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["singer_id", "track_id", "path", "lrc_path", "split"])
        writer.writerows(rows)
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    print(f"wrote {args.out / 'metadata.csv'} ({len(rows)} tracks)")


if __name__ == "__main__":
    main()
