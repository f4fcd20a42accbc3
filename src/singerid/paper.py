"""The paper's published numbers (Hu et al., Tables II, III and IV: 706 seen and 706 unseen singers), in percent,
keyed by (loss, setting, separation); and which of our systems each row compares with.

The paper's only separation is Spleeter ("with source separation"): every separation other than "none" (repet,
demucs, ...) is compared with that block, "none" with the "without source separation" block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from singerid.results import SystemInfo

PaperKey = tuple[str, str, str]  # (loss, setting, separation): separation "spleeter" or "none"

TABLE_II_COLUMNS = ("top1_seen", "top1_unseen", "top5_seen", "top5_unseen", "eer_seen", "eer_unseen")


def paper_rows(keys: Sequence[str], rows: Mapping[PaperKey, Sequence[float]]) -> dict[PaperKey, dict[str, float]]:
    return {key: dict(zip(keys, values, strict=True)) for key, values in rows.items()}


# Table II: identification (1 vs 706) with one 3.5 s query segment, and one-on-one verification; percent.
PAPER_TABLE_II: dict[PaperKey, dict[str, float]] = paper_rows(
    TABLE_II_COLUMNS,
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
PAPER_TABLE_III: dict[PaperKey, dict[str, float]] = paper_rows(
    [f"top1_{group}_{n}" for n in (1, 3, 5) for group in ("seen", "unseen")],
    {
        ("angleproto", "M=4", "spleeter"): (55.81, 49.35, 86.40, 77.13, 93.34, 87.55),
        ("triplet", "alpha=0.2", "spleeter"): (43.48, 38.93, 78.61, 67.87, 86.96, 83.07),
        ("angleproto", "M=4", "none"): (49.29, 43.42, 80.59, 67.73, 93.06, 84.95),
        ("triplet", "alpha=0.2", "none"): (40.93, 35.02, 73.51, 67.73, 87.96, 81.19),
    },
)

# Table IV: verification EER with the centroid of 1, 3, 5 enrollment segments against one query segment; percent.
PAPER_TABLE_IV: dict[PaperKey, dict[str, float]] = paper_rows(
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

TYPO_NOTE = (
    "The paper prints 2.52 for GE2E (M=3) unseen top-5 without separation, an obvious typo (top-1 is 38.35); "
    "copied as published."
)
TPL_NOTE = (
    "For Triplets (α=0.2) seen top-1 without separation the paper prints 43.48 in Table II (the same as with "
    "separation) but 40.93 in Table III; both copied as published."
)
APNL_NOTE = (
    "For A-PNL (M=4) unseen top-1 without separation the paper prints 43.41 in Table II but 43.42 in Table III; "
    "both copied as published."
)
# (table, paper row, column) -> footnote on that published value
PAPER_NOTES: dict[tuple[str, PaperKey, str], str] = {
    ("II", ("ge2e", "M=3", "none"), "top5_unseen"): TYPO_NOTE,
    ("II", ("triplet", "alpha=0.2", "none"), "top1_seen"): TPL_NOTE,
    ("III", ("triplet", "alpha=0.2", "none"), "top1_seen_1"): TPL_NOTE,
    ("II", ("angleproto", "M=4", "none"), "top1_unseen"): APNL_NOTE,
    ("III", ("angleproto", "M=4", "none"), "top1_unseen_1"): APNL_NOTE,
}
LOSS_LABELS = {"triplet": "Triplets", "ge2e": "GE2E", "proto": "PNL", "angleproto": "A-PNL"}


def paper_key(system: SystemInfo) -> PaperKey | None:
    """The paper row a trained system compares with: (loss, setting, "spleeter" or "none")."""
    if system.kind != "trained":
        return None
    separation = "none" if system.separation == "none" else "spleeter"
    return (system.loss, canonical_setting(system.setting), separation)


def canonical_setting(setting: str) -> str:
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


def paper_label(key: PaperKey) -> str:
    loss, setting, _ = key
    return f"{LOSS_LABELS[loss]} ({setting.replace('alpha', 'α')})"
