"""Reports in the paper's layout (Tables II, III, IV) beside the paper's published numbers, plus PNG plots.

A *system* is one evaluated model, a `singerid.results.SystemResult` (its description and its scores).

Results are fractions; tables show percent with 2 decimals, "-" where a value is missing. A trained system whose
(loss, setting) is one of the paper's rows gets the paper's values in a "paper" sub-row below it. The paper's only
separation is Spleeter ("with source separation"): every separation other than "none" (repet, demucs, ...) is
compared with that block, "none" with the "without source separation" block.

Plots use matplotlib's ``Figure`` directly (Agg canvas, no pyplot state); every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import norm

from singerid.fileio import write_atomically
from singerid.metrics import det_curve, equal_error_rate
from singerid.paper import (
    PAPER_NOTES,
    PAPER_TABLE_II,
    PAPER_TABLE_III,
    PAPER_TABLE_IV,
    PaperKey,
    paper_key,
    paper_label,
)
from singerid.results import EvaluationResult, SystemResult, VerificationScore, save_results
from singerid.splits import GROUPS

__all__ = [
    "DET_CONDITIONS",
    "Column",
    "Table",
    "format_tables",
    "plot_det",
    "plot_embedding_map",
    "plot_top1_vs_segments",
    "table_ii",
    "table_iii",
    "table_iv",
    "write_report",
]

_FOOTNOTE_MARKS = ("†", "‡", "§", "¶")
_SEPARATION_NOTE = (
    "The paper separates vocals with Spleeter only: rows with any separation (repet, demucs, ...) are compared "
    'with its "with source separation" block, rows with separation "none" with its "without" block.'
)

DET_CONDITIONS = ("one_on_one/seen", "one_on_one/unseen", "centroid/5/seen", "centroid/5/unseen")
_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9)
_DET_LIMITS = (0.0005, 0.95)
_DET_CLIP = 1e-6  # rates of exactly 0 or 1 are drawn at this distance from the edge (off the axes)
_TSNE_MIN_POINTS = 6
MAP_SINGERS = 40  # singers drawn on an embedding map at most


@dataclass(frozen=True)
class Column:
    """One value column: ``key`` in the rows' dicts, ``header`` in the markdown."""

    key: str
    header: str


@dataclass(frozen=True)
class Table:
    """A table of systems, in percent; ``rows`` are dicts with the columns' keys and ``paper_<key>`` values.

    Each row also has ``block`` (the separation block title), ``system``, ``kind``, ``loss``, ``setting``,
    ``separation`` and ``paper_row`` (the paper's row label, "" without a counterpart); missing values are None.
    """

    title: str
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    footnotes: tuple[str, ...] = ()
    paper_marks: dict[tuple[int, str], str] = field(default_factory=dict)  # (row index, column key) -> mark

    def to_markdown(self) -> str:
        """The table as in the paper: a block per separation setting, a "paper" sub-row under matching rows."""
        width = len(self.columns) + 1
        lines = [
            self.title,
            "",
            "| System | " + " | ".join(column.header for column in self.columns) + " |",
            "|---|" + "---:|" * len(self.columns),
        ]
        block = None
        for index, row in enumerate(self.rows):
            if row["block"] != block:
                block = row["block"]
                lines.append(f"| **{block}** |" + " |" * (width - 1))
            lines.append(
                f"| {_escape(row['system'])} | " + " | ".join(_percent(row[c.key]) for c in self.columns) + " |"
            )
            if row["paper_row"]:
                cells = [
                    _percent(row[f"paper_{c.key}"]) + self.paper_marks.get((index, c.key), "") for c in self.columns
                ]
                lines.append(f"| ↳ paper: {row['paper_row']} | " + " | ".join(cells) + " |")
        if not self.rows:
            lines.append("| (no systems) |" + " |" * (width - 1))
        for footnote in self.footnotes:
            lines += ["", footnote]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One line per system: its description, then each column's value and the paper's (percent, full precision)."""
        fields = ["block", "system", "kind", "loss", "setting", "separation", "paper_row"]
        for column in self.columns:
            fields += [column.key, f"paper_{column.key}"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({name: "" if row.get(name) is None else row[name] for name in fields})
        return buffer.getvalue()


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _block_title(separation: str) -> str:
    if separation == "none":
        return "Without source separation"
    return f"With source separation ({separation}; paper: Spleeter)"


def _blocks(systems: Sequence[SystemResult]) -> list[list[SystemResult]]:
    """Systems grouped by separation, in the paper's order: separated blocks first, then "none"."""
    separations = sorted({s.system.separation for s in systems}, key=lambda name: (name == "none", name))
    return [[s for s in systems if s.system.separation == separation] for separation in separations]


def _percent_of(value: float | None) -> float | None:
    """A fraction as percent; None where it is absent or not finite."""
    if value is None or not math.isfinite(value):
        return None
    return round(100.0 * float(value), 10)  # drops float noise such as 55.00000000000001


def _identification(result: EvaluationResult, group: str, segments: int, metric: str) -> float | None:
    score = result.identification.get(group, {}).get(segments)
    return None if score is None else _percent_of(getattr(score, metric))


def _eer(score: VerificationScore | None) -> float | None:
    return None if score is None else _percent_of(score.eer)


def _build_table(
    name: str,
    title: str,
    columns: Sequence[Column],
    systems: Sequence[SystemResult],
    paper: Mapping[PaperKey, Mapping[str, float]],
    value: Callable[[EvaluationResult, str], float | None],
) -> Table:
    rows: list[dict[str, Any]] = []
    marks: dict[tuple[int, str], str] = {}
    notes: list[str] = []
    for block in _blocks(systems):
        for entry in block:
            system = entry.system
            key = paper_key(system)
            published = paper.get(key) if key is not None else None
            row: dict[str, Any] = {
                "block": _block_title(system.separation),
                "system": system.name,
                "kind": system.kind,
                "loss": system.loss,
                "setting": system.setting,
                "separation": system.separation,
                "paper_row": paper_label(key) if published is not None and key is not None else "",
            }
            for column in columns:
                row[column.key] = value(entry.result, column.key)
                row[f"paper_{column.key}"] = None if published is None else published.get(column.key)
                note = PAPER_NOTES.get((name, key, column.key)) if published is not None and key else None
                if note is not None:
                    if note not in notes:
                        notes.append(note)
                    marks[(len(rows), column.key)] = _FOOTNOTE_MARKS[notes.index(note) % len(_FOOTNOTE_MARKS)]
            rows.append(row)
    footnotes = [f"{_FOOTNOTE_MARKS[i % len(_FOOTNOTE_MARKS)]} {note}" for i, note in enumerate(notes)]
    footnotes.append(_SEPARATION_NOTE)
    return Table(title, tuple(columns), rows, tuple(footnotes), marks)


def _query_counts(systems: Sequence[SystemResult]) -> list[int]:
    """The query lengths that some system was scored with; the paper's 1, 3, 5 when there are none."""
    counts = {n for s in systems for by_length in s.result.identification.values() for n in by_length}
    return sorted(counts) or [1, 3, 5]


def _enrollment_counts(systems: Sequence[SystemResult]) -> list[int]:
    return sorted({s for system in systems for s in system.result.centroid}) or [1, 3, 5]


def table_ii(systems: Sequence[SystemResult]) -> Table:
    """Identification (top-1, top-5) with one query segment and one-on-one verification EER, seen and unseen."""
    columns = [
        Column(f"{metric}_{group}", f"{label} {group.capitalize()}")
        for metric, label in (("top1", "Top-1 (%)"), ("top5", "Top-5 (%)"), ("eer", "EER (%)"))
        for group in GROUPS
    ]

    def value(result: EvaluationResult, key: str) -> float | None:
        metric, group = key.split("_")
        if metric == "eer":
            return _eer(result.one_on_one.get(group))
        return _identification(result, group, 1, metric)

    title = (
        "**Table II.** Identification (top-1, top-5 among the group's singers) and one-on-one verification (EER) "
        "with one 3.5 s segment, in percent."
    )
    return _build_table("II", title, columns, systems, PAPER_TABLE_II, value)


def table_iii(systems: Sequence[SystemResult]) -> Table:
    """Top-1 identification against the number of query segments (their centroid), seen and unseen."""
    columns = [
        Column(f"top1_{group}_{n}", f"{n} seg. {group.capitalize()}")
        for n in _query_counts(systems)
        for group in GROUPS
    ]

    def value(result: EvaluationResult, key: str) -> float | None:
        _, group, n = key.split("_")
        return _identification(result, group, int(n), "top1")

    title = "**Table III.** Top-1 identification (%) with the centroid of n query segments."
    return _build_table("III", title, columns, systems, PAPER_TABLE_III, value)


def table_iv(systems: Sequence[SystemResult]) -> Table:
    """Verification EER with the centroid of s enrollment segments against one query segment."""
    columns = [
        Column(f"eer_{group}_{s}", f"{s} seg. {group.capitalize()}")
        for s in _enrollment_counts(systems)
        for group in GROUPS
    ]

    def value(result: EvaluationResult, key: str) -> float | None:
        _, group, s = key.split("_")
        return _eer(result.centroid.get(int(s), {}).get(group))

    title = "**Table IV.** Verification EER (%) with the centroid of s enrollment segments against one query segment."
    return _build_table("IV", title, columns, systems, PAPER_TABLE_IV, value)


def format_tables(systems: Sequence[SystemResult]) -> str:
    """Tables II, III and IV as markdown text, for a terminal."""
    return "\n".join(table(systems).to_markdown() for table in (table_ii, table_iii, table_iv))


def _probit(rates: np.ndarray) -> np.ndarray:
    return norm.ppf(np.clip(rates, _DET_CLIP, 1.0 - _DET_CLIP))


def _save_figure(figure: Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomically(path, buffer.getvalue())


def _colours(count: int) -> list[Any]:
    """Distinct colours: tab10 / tab20 for few items, evenly spaced hues beyond."""
    import matplotlib

    if count <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(count)]
    return [matplotlib.colormaps["turbo"](i / (count - 1)) for i in range(count)]


def plot_det(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """DET curves (miss against false-alarm rate on normal-deviate axes), one per system, EER marked.

    ``scores`` maps a system name to its (scores, labels) as for :func:`singerid.metrics.det_curve`.
    """
    if not scores:
        raise ValueError("plot_det needs at least one system's (scores, labels)")
    figure = Figure(figsize=(6.4, 6.0))
    axes = figure.add_subplot()
    low, high = _probit(np.array(_DET_LIMITS))
    axes.plot([low, high], [low, high], color="0.7", linestyle=":", linewidth=1)
    for (name, (system_scores, labels)), colour in zip(scores.items(), _colours(len(scores))):
        false_alarm, miss, _ = det_curve(system_scores, labels)
        eer = equal_error_rate(system_scores, labels)
        axes.plot(_probit(false_alarm), _probit(miss), color=colour, linewidth=1.5, label=f"{name} (EER {eer:.2%})")
        point = np.clip(_probit(np.array([eer])), low, high)  # an EER off the axes is drawn at their edge
        axes.plot(
            point,
            point,
            marker="o",
            markersize=6,
            color=colour,
            markeredgecolor="black",
            linestyle="none",
            clip_on=False,
        )
    ticks = _probit(np.array(_DET_TICKS))
    labels_text = [f"{100 * tick:g}" for tick in _DET_TICKS]
    axes.set_xticks(ticks, labels_text)
    axes.set_yticks(ticks, labels_text)
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("False alarm rate (%)")
    axes.set_ylabel("Miss rate (%)")
    axes.set_title(title)
    axes.grid(True, color="0.85")
    axes.legend(loc="lower left", fontsize="small", title="dot: EER", title_fontsize="small")
    _save_figure(figure, path)


def plot_top1_vs_segments(systems: Sequence[SystemResult], path: Path) -> None:
    """Top-1 identification (%) against the number of query segments: seen solid, unseen dashed, a colour each."""
    counts = _query_counts(systems)
    figure = Figure(figsize=(7.0, 4.8))
    axes = figure.add_subplot()
    handles = []
    markers = "osD^vP*X"
    for index, (entry, colour) in enumerate(zip(systems, _colours(len(systems)))):
        system = entry.system
        label = system.name if system.separation == "none" else f"{system.name} [{system.separation}]"
        marker = markers[index % len(markers)]
        offset = 0.06 * (index - (len(systems) - 1) / 2)  # systems with equal values stay side by side, not hidden
        drawn = False
        for group, style in zip(GROUPS, ("-", "--")):
            points = [(n, _identification(entry.result, group, n, "top1")) for n in counts]
            points = [(n + offset, value) for n, value in points if value is not None]
            if points:
                x, y = zip(*points)
                axes.plot(x, y, linestyle=style, marker=marker, color=colour)
                drawn = True
        if drawn:
            handles.append(Line2D([], [], color=colour, marker=marker, label=label))
    if not handles:
        axes.text(0.5, 0.5, "no identification results", ha="center", va="center", transform=axes.transAxes)
    handles += [
        Line2D([], [], color="black", linestyle="-", label="seen"),
        Line2D([], [], color="black", linestyle="--", label="unseen"),
    ]
    axes.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    axes.set_xticks(counts)
    axes.set_xlabel("query segments (3.5 s each)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 102)
    axes.set_title("Identification top-1 vs. query length")
    axes.grid(True, color="0.85")
    _save_figure(figure, path)


def _embedding_coordinates(embeddings: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows: t-SNE of a 50-d PCA when scikit-learn is importable, else PCA; and the method."""
    centred = embeddings - embeddings.mean(axis=0)
    left, singular, _ = np.linalg.svd(centred, full_matrices=False)
    reduced = left[:, :50] * singular[:50]
    if reduced.shape[0] >= _TSNE_MIN_POINTS:
        try:
            from sklearn.manifold import TSNE
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            perplexity = min(30.0, (reduced.shape[0] - 1) / 3)
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
            # One OpenMP thread: on a busy machine its spinning threads made a 60-point map take a minute.
            with threadpool_limits(limits=1, user_api="openmp"):
                coordinates = tsne.fit_transform(reduced)
            return coordinates, f"t-SNE of {reduced.shape[1]}-d PCA"
    coordinates = np.zeros((reduced.shape[0], 2))
    coordinates[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    return coordinates, "PCA"


def plot_embedding_map(
    embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str, max_singers: int = MAP_SINGERS
) -> None:
    """A 2-D map of embeddings coloured by singer (legend up to 20 singers); the method is named in the title. With
    more than `max_singers` singers, as many of them (drawn with a fixed seed) are mapped: more would not be
    readable, and t-SNE's time grows with the points."""
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        raise ValueError(f"embeddings must be an (n >= 2, D) matrix, got shape {matrix.shape}")
    if len(labels) != matrix.shape[0]:
        raise ValueError(f"{len(labels)} labels for {matrix.shape[0]} embeddings")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("embeddings must be finite")
    label_array = np.asarray([str(label) for label in labels])
    every = sorted(set(label_array.tolist()))
    singers = every
    if len(every) > max_singers:
        singers = sorted(np.random.default_rng(0).choice(every, max_singers, replace=False).tolist())
        kept = np.isin(label_array, singers)
        matrix, label_array = matrix[kept], label_array[kept]
        title = f"{title}, {max_singers} of {len(every)} singers"
    coordinates, method = _embedding_coordinates(matrix)
    figure = Figure(figsize=(7.0, 6.0))
    axes = figure.add_subplot()
    for singer, colour in zip(singers, _colours(len(singers))):
        chosen = label_array == singer
        axes.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=14, color=colour, label=singer, alpha=0.8)
    if len(singers) <= 20:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title="singer")
    axes.set_title(f"{title} ({method}, {len(singers)} singers, {matrix.shape[0]} points)")
    axes.set_xticks([])
    axes.set_yticks([])
    _save_figure(figure, path)


def _condition_title(condition: str) -> str:
    """'one_on_one/seen' -> 'DET: one-on-one, seen singers'; 'centroid/5/unseen' -> '... 5-segment centroid ...'."""
    parts = condition.split("/")
    kind = "one-on-one" if parts[0] == "one_on_one" else f"{parts[1]}-segment enrollment centroid"
    return f"DET: {kind}, {parts[-1]} singers"


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "system"


def _systems_overview(systems: Sequence[SystemResult]) -> str:
    lines = [
        "| System | Kind | Loss | Setting | Separation | Scoring | Seen singers | Unseen singers | Skipped |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for entry in systems:
        system, singers = entry.system, entry.result.singers
        counts = [str(singers.get(key, "-")) for key in ("seen", "unseen", "skipped")]
        cells = [system.name, system.kind, system.loss or "-", system.setting or "-", system.separation]
        lines.append("| " + " | ".join([*cells, system.scoring, *counts]) + " |")
    return "\n".join(lines) + "\n"


def protocol_notes(systems: Sequence[SystemResult]) -> list[str]:
    """What a reader must know to read the tables: singers left out and why, and groups too small to rank."""
    if not systems:
        return []
    result = systems[0].result  # every system of a report is scored on the same trials
    notes = []
    for group, count in result.singers.items():
        if group != "skipped" and 0 < count <= 5:
            notes.append(
                f"Only {count} {group} singers: chance top-1 is {100 / count:.0f} %, and top-5 is 100 % by "
                "construction."
            )
    skipped = result.skipped_singers
    if skipped:
        listed = "; ".join(f"{singer}: {why}" for singer, why in list(skipped.items())[:10])
        notes.append(f"{len(skipped)} test singers take no part ({listed}{'; ...' if len(skipped) > 10 else ''}).")
    return notes


def write_report(
    systems: Sequence[SystemResult],
    out_dir: Path,
    det_scores: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]] | None = None,
    maps: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    title: str = "singerid report",
    notes: Sequence[str] = (),
) -> Path:
    """Write ``report.md``, ``table2/3/4.csv``, ``results.json`` and the PNGs into ``out_dir``; return report.md.

    ``det_scores`` maps a system name to its raw verification scores per condition (``EvaluationResult.scores()``);
    a ``det_<condition>.png`` is drawn for each of :data:`DET_CONDITIONS` that some system has. ``maps`` maps a
    system name to (embeddings, singer labels) for ``map_<system>.png``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"2": table_ii(systems), "3": table_iii(systems), "4": table_iv(systems)}
    for number, table in tables.items():
        write_atomically(out_dir / f"table{number}.csv", table.to_csv())
    save_results(systems, out_dir / "results.json")

    figures: list[tuple[str, str]] = []
    plot_top1_vs_segments(systems, out_dir / "top1_vs_segments.png")
    figures.append(("Top-1 identification vs. number of query segments", "top1_vs_segments.png"))
    for condition in DET_CONDITIONS:
        curves = {
            name: by_condition[condition]
            for name, by_condition in (det_scores or {}).items()
            if condition in by_condition
        }
        if curves:
            file_name = f"det_{_file_stem(condition.replace('/', '_'))}.png"
            plot_det(curves, out_dir / file_name, _condition_title(condition))
            figures.append((f"DET curves, {condition}", file_name))
    for name, (embeddings, labels) in (maps or {}).items():
        file_name = f"map_{_file_stem(name)}.png"
        plot_embedding_map(embeddings, labels, out_dir / file_name, f"{name}: test-singer embeddings")
        figures.append((f"Embedding map, {name}", file_name))

    sections = [f"# {title}", ""]
    sections += [f"- {note}" for note in [*notes, *protocol_notes(systems)]]
    sections += [
        "",
        "Our values are in percent. Under a trained system whose loss and setting are one of the paper's rows "
        '(e.g. A-PNL with M=4, triplets with alpha=0.2), a "↳ paper" sub-row gives the published value (Tables '
        "II-IV of the paper, 706 seen and 706 unseen singers), for orientation only: data, singers and trial "
        f"counts differ. {_SEPARATION_NOTE}",
        "",
        "## Systems",
        "",
        _systems_overview(systems),
        "## Table II: one segment",
        "",
        tables["2"].to_markdown(),
        "## Table III: identification with longer queries",
        "",
        tables["3"].to_markdown(),
        "## Table IV: verification with centroid enrollment",
        "",
        tables["4"].to_markdown(),
        "## Figures",
        "",
    ]
    sections += [f"![{caption}]({file_name})\n" for caption, file_name in figures]
    sections += [
        "Tables as CSV: [table2.csv](table2.csv), [table3.csv](table3.csv), [table4.csv](table4.csv); "
        "all results: [results.json](results.json).",
        "",
    ]
    report = out_dir / "report.md"
    write_atomically(report, "\n".join(sections))
    return report
