"""Progress of long steps: a tqdm bar on a terminal, a plain line now and then in a log, nothing when quiet.

On a terminal the bar redraws in place. When stderr is not a terminal (a log file, a CI job, a service manager),
a redrawn bar would write every refresh into the log; there the bar prints one complete line at most every
`LOG_INTERVAL_SECONDS`, and a last one when it closes. `set_quiet(True)` (the CLI's `--quiet`) turns bars off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
LOG_INTERVAL_SECONDS = 60.0
_QUIET = {"on": bool(os.environ.get("SINGERID_QUIET"))}


def set_quiet(quiet: bool) -> None:
    """Turns every progress bar of this process off (True) or back on."""
    _QUIET["on"] = quiet


class _LogLines(tqdm):
    """A bar that prints whole lines (newline-terminated), for output that is not a terminal."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        self.fp.write((msg or self.__str__()).strip() + "\n")
        self.fp.flush()
        return True


def progress_bar(iterable: Iterable[Item] | None = None, *, disable: bool = False, **options: Any) -> tqdm:
    """A tqdm bar (same keywords) that suits where stderr goes; disabled when quiet."""
    disable = disable or _QUIET["on"]
    if sys.stderr.isatty():
        return tqdm(iterable, disable=disable, **options)
    options.pop("leave", None)
    return _LogLines(iterable, disable=disable, mininterval=LOG_INTERVAL_SECONDS, leave=True, **options)
