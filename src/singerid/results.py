"""Evaluation results: the typed record that crosses from the protocols to the reports, and results.json.

One `SystemResult` per evaluated system: what the system is (`SystemInfo`) and what it scored
(`EvaluationResult`: identification top-1/top-5 per group and query length, one-on-one and centroid verification
per group). Scores are fractions, not percent. `results.json` holds a list of them, in the layout of version 1::

    {"format": "singerid-results", "version": 1, "systems": [
        {"system": {"name", "loss", "setting", "separation", "kind", "scoring"},
         "identification": {"seen": {"1": {"top1", "top5", "trials"}, ...}, "unseen": ...},
         "verification": {"one_on_one": {"seen": {"eer", "min_dcf_01", "min_dcf_05", "trials", "targets"}},
                          "centroid": {"1": {"seen": {...}}, ...}},
         "singers": {"seen": n, "unseen": n, "skipped": n}, "skipped_singers": {singer: why}}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from singerid.errors import SingerIdError
from singerid.fileio import check_format, record_from_dict, write_atomically

RESULTS_FORMAT = "singerid-results"
RESULTS_VERSION = 1
METRICS = ("cosine", "sqeuclidean")  # how a system's embeddings are compared


class ResultsError(SingerIdError):
    """A results file that cannot be read; the message names it and says why."""


@dataclass(frozen=True)
class SystemInfo:
    """How a system is named in the tables."""

    name: str
    loss: str = ""  # the loss's registry name; "-" or "" for a baseline
    setting: str = ""  # the setting the paper varies: "alpha=0.2" (triplet) or "M=3"
    separation: str = "none"  # the store's vocal separation
    kind: str = "trained"  # trained | untrained | mfcc | peer
    scoring: str = "cosine"  # cosine | sqeuclidean (the prototypical loss's own metric)


@dataclass(frozen=True)
class IdentificationScore:
    top1: float
    top5: float
    trials: int


@dataclass(frozen=True)
class VerificationScore:
    eer: float
    min_dcf_01: float
    min_dcf_05: float
    trials: int
    targets: int


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Scores of every protocol of one system on one set of trials."""

    identification: dict[str, dict[int, IdentificationScore]]  # group -> query segments -> score
    one_on_one: dict[str, VerificationScore]  # group -> score
    centroid: dict[int, dict[str, VerificationScore]]  # enrollment segments -> group -> score
    singers: dict[str, int]  # singers taking part per group, and "skipped"
    skipped_singers: dict[str, str] = field(default_factory=dict)  # singer_id -> why it takes no part
    # "one_on_one/seen", "centroid/3/unseen", ... -> (scores float64, labels bool), for DET curves; not stored
    verification_scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def top1(self, group: str, segments: int = 1) -> float | None:
        score = self.identification.get(group, {}).get(segments)
        return None if score is None else score.top1

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (without the raw verification scores)."""
        return {
            "identification": {
                group: {str(n): asdict(score) for n, score in by_length.items()}
                for group, by_length in self.identification.items()
            },
            "verification": {
                "one_on_one": {group: asdict(score) for group, score in self.one_on_one.items()},
                "centroid": {
                    str(s): {group: asdict(score) for group, score in by_group.items()}
                    for s, by_group in self.centroid.items()
                },
            },
            "singers": dict(self.singers),
            "skipped_singers": dict(self.skipped_singers),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "results") -> EvaluationResult:
        verification = data.get("verification", {})

        def scores(kind: type, by_key: Mapping[str, Any]) -> dict[str, Any]:
            return {key: record_from_dict(kind, value, source) for key, value in by_key.items()}

        return cls(
            identification={
                group: {int(n): record_from_dict(IdentificationScore, s, source) for n, s in by_length.items()}
                for group, by_length in data.get("identification", {}).items()
            },
            one_on_one=scores(VerificationScore, verification.get("one_on_one", {})),
            centroid={int(s): scores(VerificationScore, g) for s, g in verification.get("centroid", {}).items()},
            singers={key: int(value) for key, value in data.get("singers", {}).items()},
            skipped_singers=dict(data.get("skipped_singers", {})),
        )


@dataclass(frozen=True, eq=False)
class SystemResult:
    """One evaluated system: its description and its scores."""

    system: SystemInfo
    result: EvaluationResult

    def to_dict(self) -> dict[str, Any]:
        return {"system": asdict(self.system), **self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "results") -> SystemResult:
        if not isinstance(data, Mapping) or not isinstance(data.get("system"), Mapping):
            raise ResultsError(f"{source}: a system entry needs 'system': {{'name': ...}}, got {data!r:.200}")
        try:
            return cls(record_from_dict(SystemInfo, data["system"], source), EvaluationResult.from_dict(data, source))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ResultsError(f"{source}: damaged system entry ({type(error).__name__}: {error})") from error


def save_results(systems: Sequence[SystemResult], path: str | Path) -> Path:
    """Writes results.json atomically."""
    record = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "systems": [s.to_dict() for s in systems]}
    return write_atomically(path, json.dumps(record, indent=2) + "\n")


def load_results(path: str | Path) -> list[SystemResult]:
    """The systems of a results.json (this or an older version); ResultsError if it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    except OSError as error:
        raise ResultsError(f"{path}: cannot read results ({error})") from error
    problem = check_format(data, RESULTS_FORMAT, RESULTS_VERSION, "results file", str(path))
    if problem:
        raise ResultsError(problem)
    systems = data.get("systems")
    if not isinstance(systems, list):
        raise ResultsError(f"{path}: 'systems' must be a list")
    return [SystemResult.from_dict(entry, str(path)) for entry in systems]
