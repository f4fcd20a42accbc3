"""Tests for singerid.paper: the published numbers, and which of our systems compares with which row."""

from __future__ import annotations

import pytest

from singerid.paper import PAPER_TABLE_II, PAPER_TABLE_III, PAPER_TABLE_IV, canonical_setting, paper_key
from singerid.results import SystemInfo


def test_paper_tables_hold_the_published_numbers() -> None:
    assert len(PAPER_TABLE_II) == 16
    assert PAPER_TABLE_II[("angleproto", "M=4", "spleeter")]["top1_seen"] == 55.81
    assert PAPER_TABLE_II[("triplet", "alpha=0.1", "none")]["eer_unseen"] == 18.97
    assert PAPER_TABLE_II[("ge2e", "M=3", "none")]["top5_unseen"] == 2.52  # the paper's typo, kept
    assert PAPER_TABLE_III[("triplet", "alpha=0.2", "none")]["top1_seen_5"] == 87.96
    assert PAPER_TABLE_IV[("angleproto", "M=3", "none")]["eer_seen_5"] == 8.72
    # Table IV's one-segment column repeats Table II's one-on-one EER.
    for key, row in PAPER_TABLE_IV.items():
        assert (row["eer_seen_1"], row["eer_unseen_1"]) == (
            PAPER_TABLE_II[key]["eer_seen"],
            PAPER_TABLE_II[key]["eer_unseen"],
        )


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("alpha = 0.20", "alpha=0.2"), ("margin=0.1", "alpha=0.1"), ("m=3", "M=3"), ("M = 4", "M=4"), ("x=y", "x=y")],
)
def test_settings_are_matched_however_they_are_written(written: str, canonical: str) -> None:
    assert canonical_setting(written) == canonical


def test_only_trained_systems_have_a_paper_row_and_any_separation_is_spleeter() -> None:
    assert paper_key(SystemInfo("a", "angleproto", "M=4", "repet")) == ("angleproto", "M=4", "spleeter")
    assert paper_key(SystemInfo("a", "angleproto", "M=4", "none")) == ("angleproto", "M=4", "none")
    assert paper_key(SystemInfo("mfcc", "-", "-", "none", "mfcc")) is None
