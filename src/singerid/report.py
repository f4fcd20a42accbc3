"""Reports in the paper's layout (Tables II, III, IV) beside the paper's published numbers, plus PNG plots.

A *system* is one evaluated model, a dict::

    {"system": {"name": "apnl-m3", "loss": "angleproto", "setting": "M=3", "separation": "none", "kind": "trained"},
     "identification": ..., "verification": ..., "singers": ...}  # as protocols.EvaluationResult.to_dict()

Results are fractions; tables show percent with 2 decimals, "-" where a value is missing. A trained system whose
(loss, setting) is one of the paper's rows gets the paper's values in a "paper" sub-row below it. The paper's only
separation is Spleeter ("with source separation"): every separation other than "none" (repet, demucs, ...) is
compared with that block, "none" with the "without source separation" block.

Plots use matplotlib's ``Figure`` directly (Agg canvas, no pyplot state); every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import norm

from singerid.metrics import det_curve, equal_error_rate

__all__ = [
    "DET_CONDITIONS",
    "PAPER_TABLE_II",
    "PAPER_TABLE_III",
    "PAPER_TABLE_IV",
    "Column",
    "Table",
    "format_tables",
    "load_results",
    "plot_det",
    "plot_embedding_map",
    "plot_top1_vs_segments",
    "table_ii",
    "table_iii",
    "table_iv",
    "write_report",
]

PaperKey = tuple[str, str, str]  # (loss, setting, separation): separation "spleeter" or "none"

_TABLE_II_COLUMNS = ("top1_seen", "top1_unseen", "top5_seen", "top5_unseen", "eer_seen", "eer_unseen")


def _paper_rows(keys: Sequence[str], rows: Mapping[PaperKey, Sequence[float]]) -> dict[PaperKey, dict[str, float]]:
    return {key: dict(zip(keys, values, strict=True)) for key, values in rows.items()}


# Table II: identification (1 vs 706) with one 3.5 s query segment, and one-on-one verification; percent.
PAPER_TABLE_II: dict[PaperKey, dict[str, float]] = _paper_rows(
    _TABLE_II_COLUMNS,
    {
        ("triplet", "alpha=0.1", "spleeter"): (42.53, 40.66, 69.26, 62.95, 16.32, 20.34),
        ("triplet", "alpha=0.2", "spleeter"): (43.48, 38.93, 69.69, 64.54, 16.36, 20.11),
        ("ge2e", "M=3", "spleeter"): (50.99, 45.59, 72.80, 67.58, 16.44, 21.42),
        ("ge2e", "M=4", "spleeter"): (53.25, 44.43, 74.78, 67.87, 17.09, 21.78),
        ("proto", "M=3", "spleeter"): (51.56, 43.56, 74.50, 66.71, 17.75, 20.97),
        ("proto", "M=4", "spleeter"): (53.68, 47.46, 74.93, 69.46, 20.34, 23.55),
        ("angleproto", "M=3", "spleeter"): (51.27, 45.59, 73.65, 68.60, 16.67, 20.62),
        ("angleproto", "M=4", "spleeter"): (55.81, 49.35, 76.34, 70.77, 17.06, 20.64),
        ("triplet", "alpha=0.1", "none"): (40.08, 35.46, 64.59, 59.62, 15.87, 18.97),
        ("triplet", "alpha=0.2", "none"): (43.48, 35.02, 65.01, 63.10, 15.92, 19.10),
        ("ge2e", "M=3", "none"): (47.73, 38.35, 69.83, 2.52, 16.58, 20.57),
        ("ge2e", "M=4", "none"): (47.59, 42.11, 72.38, 65.41, 17.37, 21.35),
        ("proto", "M=3", "none"): (47.73, 42.98, 70.82, 68.74, 17.58, 20.75),
        ("proto", "M=4", "none"): (51.98, 44.57, 72.66, 68.31, 20.04, 22.50),
        ("angleproto", "M=3", "none"): (50.00, 43.85, 71.10, 67.87, 16.10, 19.66),
        ("angleproto", "M=4", "none"): (49.29, 43.41, 70.96, 66.86, 17.14, 20.03),
    },
)

# Table III: top-1 identification with the centroid of 1, 3, 5 query segments; percent.
PAPER_TABLE_III: dict[PaperKey, dict[str, float]] = _paper_rows(
    [f"top1_{group}_{n}" for n in (1, 3, 5) for group in ("seen", "unseen")],
    {
        ("angleproto", "M=4", "spleeter"): (55.81, 49.35, 86.40, 77.13, 93.34, 87.55),
        ("triplet", "alpha=0.2", "spleeter"): (43.48, 38.93, 78.61, 67.87, 86.96, 83.07),
        ("angleproto", "M=4", "none"): (49.29, 43.42, 80.59, 67.73, 93.06, 84.95),
        ("triplet", "alpha=0.2", "none"): (40.93, 35.02, 73.51, 67.73, 87.96, 81.19),
    },
)

# Table IV: verification EER with the centroid of 1, 3, 5 enrollment segments against one query segment; percent.
PAPER_TABLE_IV: dict[PaperKey, dict[str, float]] = _paper_rows(
    [f"eer_{group}_{n}" for n in (1, 3, 5) for group in ("seen", "unseen")],
    {
        ("triplet", "alpha=0.1", "spleeter"): (16.32, 20.34, 10.46, 13.59, 9.14, 12.11),
        ("triplet", "alpha=0.2", "spleeter"): (16.36, 20.11, 10.46, 13.38, 9.21, 11.66),
        ("angleproto", "M=3", "spleeter"): (16.67, 20.62, 10.50, 13.75, 9.24, 11.93),
        ("angleproto", "M=4", "spleeter"): (17.06, 20.64, 10.58, 13.59, 9.07, 11.62),
        ("triplet", "alpha=0.1", "none"): (15.87, 18.97, 10.34, 12.72, 9.16, 11.21),
        ("triplet", "alpha=0.2", "none"): (15.92, 19.10, 10.36, 12.68, 8.98, 11.04),
        ("angleproto", "M=3", "none"): (16.10, 19.66, 10.18, 12.79, 8.72, 10.99),
        ("angleproto", "M=4", "none"): (17.14, 20.03, 10.66, 13.12, 9.15, 11.11),
    },
)

_TYPO_NOTE = (
    "The paper prints 2.52 for GE2E (M=3) unseen top-5 without separation, an obvious typo (top-1 is 38.35); "
    "copied as published."
)
_TPL_NOTE = (
    "For Triplets (α=0.2) seen top-1 without separation the paper prints 43.48 in Table II (the same as with "
    "separation) but 40.93 in Table III; both copied as published."
)
_APNL_NOTE = (
    "For A-PNL (M=4) unseen top-1 without separation the paper prints 43.41 in Table II but 43.42 in Table III; "
    "both copied as published."
)
# (table, paper row, column) -> footnote on that published value
_PAPER_NOTES: dict[tuple[str, PaperKey, str], str] = {
    ("II", ("ge2e", "M=3", "none"), "top5_unseen"): _TYPO_NOTE,
    ("II", ("triplet", "alpha=0.2", "none"), "top1_seen"): _TPL_NOTE,
    ("III", ("triplet", "alpha=0.2", "none"), "top1_seen_1"): _TPL_NOTE,
    ("II", ("angleproto", "M=4", "none"), "top1_unseen"): _APNL_NOTE,
    ("III", ("angleproto", "M=4", "none"), "top1_unseen_1"): _APNL_NOTE,
}
_FOOTNOTE_MARKS = ("†", "‡", "§", "¶")
_SEPARATION_NOTE = (
    "The paper separates vocals with Spleeter only: rows with any separation (repet, demucs, ...) are compared "
    'with its "with source separation" block, rows with separation "none" with its "without" block.'
)

_LOSS_LABELS = {"triplet": "Triplets", "ge2e": "GE2E", "proto": "PNL", "angleproto": "A-PNL"}
GROUPS = ("seen", "unseen")
DET_CONDITIONS = ("one_on_one/seen", "one_on_one/unseen", "centroid/5/seen", "centroid/5/unseen")
_DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9)
_DET_LIMITS = (0.0005, 0.95)
_DET_CLIP = 1e-6  # rates of exactly 0 or 1 are drawn at this distance from the edge (off the axes)
_RESULTS_FORMAT = "singerid-results"
_RESULTS_VERSION = 1
_TSNE_MIN_POINTS = 6


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


@dataclass(frozen=True)
class _System:
    name: str
    loss: str
    setting: str
    separation: str
    kind: str
    result: Mapping[str, Any]

    @property
    def paper_key(self) -> PaperKey | None:
        if self.kind != "trained":
            return None
        separation = "none" if self.separation == "none" else "spleeter"
        return (self.loss, _canonical_setting(self.setting), separation)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _canonical_setting(setting: str) -> str:
    """'alpha = 0.20' -> 'alpha=0.2', 'm=3' -> 'M=3'; anything else unchanged (spaces removed)."""
    compact = setting.replace(" ", "")
    name, _, value = compact.partition("=")
    try:
        if name.lower() in ("alpha", "margin", "α"):
            return f"alpha={float(value):g}"
        if name.lower() == "m":
            return f"M={int(value)}"
    except ValueError:
        return compact
    return compact


def _paper_label(key: PaperKey) -> str:
    loss, setting, _ = key
    return f"{_LOSS_LABELS[loss]} ({setting.replace('alpha', 'α')})"


def _parse_systems(systems: Sequence[Mapping[str, Any]]) -> list[_System]:
    parsed = []
    for position, entry in enumerate(systems):
        description = entry.get("system") if isinstance(entry, Mapping) else None
        if not isinstance(description, Mapping) or not isinstance(description.get("name"), str):
            raise ValueError(
                f"system {position}: expected a dict with 'system': {{'name': ..., ...}}, got {entry!r:.200}"
            )
        parsed.append(
            _System(
                name=description["name"],
                loss=str(description.get("loss", "")),
                setting=str(description.get("setting", "")),
                separation=str(description.get("separation", "none")),
                kind=str(description.get("kind", "trained")),
                result=entry,
            )
        )
    return parsed


def _block_title(separation: str) -> str:
    if separation == "none":
        return "Without source separation"
    return f"With source separation ({separation}; paper: Spleeter)"


def _blocks(systems: list[_System]) -> list[list[_System]]:
    """Systems grouped by separation, in the paper's order: separated blocks first, then "none"."""
    separations = sorted({s.separation for s in systems}, key=lambda name: (name == "none", name))
    return [[s for s in systems if s.separation == separation] for separation in separations]


def _lookup(result: Mapping[str, Any], *path: str) -> float | None:
    """A fraction deep in a result dict, as percent; None where any level is absent or the value not finite."""
    node: Any = result
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return round(100.0 * float(node), 10)  # drops float noise such as 55.00000000000001


def _build_table(
    name: str,
    title: str,
    columns: Sequence[Column],
    systems: Sequence[Mapping[str, Any]],
    paper: Mapping[PaperKey, Mapping[str, float]],
    value: Callable[[Mapping[str, Any], str], float | None],
) -> Table:
    rows: list[dict[str, Any]] = []
    marks: dict[tuple[int, str], str] = {}
    notes: list[str] = []
    for block in _blocks(_parse_systems(systems)):
        for system in block:
            key = system.paper_key
            published = paper.get(key) if key is not None else None
            row: dict[str, Any] = {
                "block": _block_title(system.separation),
                "system": system.name,
                "kind": system.kind,
                "loss": system.loss,
                "setting": system.setting,
                "separation": system.separation,
                "paper_row": _paper_label(key) if published is not None and key is not None else "",
            }
            for column in columns:
                row[column.key] = value(system.result, column.key)
                row[f"paper_{column.key}"] = None if published is None else published.get(column.key)
                note = _PAPER_NOTES.get((name, key, column.key)) if published is not None and key else None
                if note is not None:
                    if note not in notes:
                        notes.append(note)
                    marks[(len(rows), column.key)] = _FOOTNOTE_MARKS[notes.index(note) % len(_FOOTNOTE_MARKS)]
            rows.append(row)
    footnotes = [f"{_FOOTNOTE_MARKS[i % len(_FOOTNOTE_MARKS)]} {note}" for i, note in enumerate(notes)]
    footnotes.append(_SEPARATION_NOTE)
    return Table(title, tuple(columns), rows, tuple(footnotes), marks)


def _mapping(node: Any, key: str) -> Mapping[str, Any]:
    value = node.get(key) if isinstance(node, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _counts(keyed: Sequence[Mapping[str, Any]]) -> list[int]:
    """The segment counts keying these dicts ("1", "3", ...), sorted; the paper's 1, 3, 5 when there are none."""
    return sorted({int(key) for node in keyed for key in node if str(key).isdigit()}) or [1, 3, 5]


def _query_counts(systems: Sequence[Mapping[str, Any]]) -> list[int]:
    groups = [_mapping(_mapping(entry, "identification"), group) for entry in systems for group in GROUPS]
    return _counts(groups)


def _enrollment_counts(systems: Sequence[Mapping[str, Any]]) -> list[int]:
    return _counts([_mapping(_mapping(entry, "verification"), "centroid") for entry in systems])


def table_ii(systems: Sequence[Mapping[str, Any]]) -> Table:
    """Identification (top-1, top-5) with one query segment and one-on-one verification EER, seen and unseen."""
    columns = [
        Column(f"{metric}_{group}", f"{label} {group.capitalize()}")
        for metric, label in (("top1", "Top-1 (%)"), ("top5", "Top-5 (%)"), ("eer", "EER (%)"))
        for group in GROUPS
    ]

    def value(result: Mapping[str, Any], key: str) -> float | None:
        metric, group = key.split("_")
        if metric == "eer":
            return _lookup(result, "verification", "one_on_one", group, "eer")
        return _lookup(result, "identification", group, "1", metric)

    title = (
        "**Table II.** Identification (top-1, top-5 among the group's singers) and one-on-one verification (EER) "
        "with one 3.5 s segment, in percent."
    )
    return _build_table("II", title, columns, systems, PAPER_TABLE_II, value)


def table_iii(systems: Sequence[Mapping[str, Any]]) -> Table:
    """Top-1 identification against the number of query segments (their centroid), seen and unseen."""
    columns = [
        Column(f"top1_{group}_{n}", f"{n} seg. {group.capitalize()}")
        for n in _query_counts(systems)
        for group in GROUPS
    ]

    def value(result: Mapping[str, Any], key: str) -> float | None:
        _, group, n = key.split("_")
        return _lookup(result, "identification", group, n, "top1")

    title = "**Table III.** Top-1 identification (%) with the centroid of n query segments."
    return _build_table("III", title, columns, systems, PAPER_TABLE_III, value)


def table_iv(systems: Sequence[Mapping[str, Any]]) -> Table:
    """Verification EER with the centroid of s enrollment segments against one query segment."""
    columns = [
        Column(f"eer_{group}_{s}", f"{s} seg. {group.capitalize()}")
        for s in _enrollment_counts(systems)
        for group in GROUPS
    ]

    def value(result: Mapping[str, Any], key: str) -> float | None:
        _, group, s = key.split("_")
        return _lookup(result, "verification", "centroid", s, group, "eer")

    title = "**Table IV.** Verification EER (%) with the centroid of s enrollment segments against one query segment."
    return _build_table("IV", title, columns, systems, PAPER_TABLE_IV, value)


def format_tables(systems: Sequence[Mapping[str, Any]]) -> str:
    """Tables II, III and IV as markdown text, for a terminal."""
    return "\n".join(table(systems).to_markdown() for table in (table_ii, table_iii, table_iv))


def _probit(rates: np.ndarray) -> np.ndarray:
    return norm.ppf(np.clip(rates, _DET_CLIP, 1.0 - _DET_CLIP))


def _save_figure(figure: Figure, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _write_atomically(path, buffer.getvalue())


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            handle.write(data)
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise
    temporary.chmod(0o644)
    os.replace(temporary, path)


def _write_text(path: Path, text: str) -> None:
    _write_atomically(path, text.encode("utf-8"))


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


def plot_top1_vs_segments(systems: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Top-1 identification (%) against the number of query segments: seen solid, unseen dashed, a colour each."""
    parsed = _parse_systems(systems)
    counts = _query_counts(systems)
    figure = Figure(figsize=(7.0, 4.8))
    axes = figure.add_subplot()
    handles = []
    markers = "osD^vP*X"
    for index, (system, colour) in enumerate(zip(parsed, _colours(len(parsed)))):
        label = system.name if system.separation == "none" else f"{system.name} [{system.separation}]"
        marker = markers[index % len(markers)]
        offset = 0.06 * (index - (len(parsed) - 1) / 2)  # systems with equal values stay side by side, not hidden
        drawn = False
        for group, style in zip(GROUPS, ("-", "--")):
            points = [(n, _lookup(system.result, "identification", group, str(n), "top1")) for n in counts]
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


def plot_embedding_map(embeddings: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """A 2-D map of embeddings coloured by singer (legend up to 20 singers); the method is named in the title."""
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        raise ValueError(f"embeddings must be an (n >= 2, D) matrix, got shape {matrix.shape}")
    if len(labels) != matrix.shape[0]:
        raise ValueError(f"{len(labels)} labels for {matrix.shape[0]} embeddings")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("embeddings must be finite")
    coordinates, method = _embedding_coordinates(matrix)
    label_array = np.asarray([str(label) for label in labels])
    singers = sorted(set(label_array.tolist()))
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


def _systems_overview(parsed: Sequence[_System]) -> str:
    lines = [
        "| System | Kind | Loss | Setting | Separation | Seen singers | Unseen singers | Skipped |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for system in parsed:
        singers = system.result.get("singers", {})
        counts = [str(singers.get(key, "-")) for key in ("seen", "unseen", "skipped")]
        cells = [system.name, system.kind, system.loss or "-", system.setting or "-", system.separation, *counts]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def protocol_notes(systems: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a reader must know to read the tables: singers left out and why, and groups too small to rank."""
    if not systems:
        return []
    result = systems[0]  # every system of a report is scored on the same trials
    notes = []
    for group, count in result.get("singers", {}).items():
        if group != "skipped" and 0 < count <= 5:
            notes.append(
                f"Only {count} {group} singers: chance top-1 is {100 / count:.0f} %, and top-5 is 100 % by "
                "construction."
            )
    skipped = result.get("skipped_singers", {})
    if skipped:
        listed = "; ".join(f"{singer}: {why}" for singer, why in list(skipped.items())[:10])
        notes.append(f"{len(skipped)} test singers take no part ({listed}{'; ...' if len(skipped) > 10 else ''}).")
    return notes


def write_report(
    systems: Sequence[Mapping[str, Any]],
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
    parsed = _parse_systems(systems)
    tables = {"2": table_ii(systems), "3": table_iii(systems), "4": table_iv(systems)}
    for number, table in tables.items():
        _write_text(out_dir / f"table{number}.csv", table.to_csv())
    results = {"format": _RESULTS_FORMAT, "version": _RESULTS_VERSION, "systems": [dict(s) for s in systems]}
    _write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")

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
        _systems_overview(parsed),
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
    _write_text(report, "\n".join(sections))
    return report


def load_results(path: Path) -> list[dict[str, Any]]:
    """The systems of a ``results.json`` written by :func:`write_report` (ValueError if it is not one)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict) or data.get("format") != _RESULTS_FORMAT:
        raise ValueError(f"{path}: not a singerid results file (format is not {_RESULTS_FORMAT!r})")
    if data.get("version") != _RESULTS_VERSION:
        raise ValueError(f"{path}: unsupported results version {data.get('version')!r}; expected {_RESULTS_VERSION}")
    systems = data.get("systems")
    if not isinstance(systems, list):
        raise ValueError(f"{path}: 'systems' must be a list")
    _parse_systems(systems)
    return systems
