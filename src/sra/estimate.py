"""What a long job will cost, said once after its first batch: `sra generate` (50,000 SDE-250 images by default),
`sra bench` and `sra probe` print the time the first batch took, the time left and the total at that rate, so that a
default sized for eight GPUs is stopped on a laptop after seconds, not hours.

The first batch also pays for one-off work (allocation, kernel selection, compilation), so the estimate is an upper
bound more often than not.
"""
from __future__ import annotations

import time
from typing import Callable


def duration(seconds: float) -> str:
    """0.013 s, 4.2 s, 12 s, 4 min 10 s, 3 h 05 min, 46 h 20 min."""
    if seconds < 9.5:
        return f"{max(0.0, seconds):.2g} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class FirstBatchEstimate:
    """Call `done(n)` after each batch with the units it finished; the first call prints one line:
    "estimate: the first batch of 32 images took 55 s; about 23 h 50 min left, 23 h 52 min in all (50,000 images)".
    Units are whatever the job counts, plural (images, steps); the rate is the first batch's."""

    def __init__(self, total: int, unit: str, write: Callable[[str], object] = print, note: str = ""):
        self.total, self.unit, self.write, self.note = total, unit, write, note
        self.start = time.perf_counter()
        self.line: str | None = None  # the printed line, once printed

    def done(self, n: int) -> None:
        if self.line is not None or n <= 0:
            return
        if n >= self.total:  # done in one batch: nothing left to estimate
            self.line = ""
            return
        took = time.perf_counter() - self.start
        per_unit = took / n
        what = self.unit[:-1] if n == 1 and self.unit.endswith("s") else self.unit
        self.line = (f"estimate: the first batch of {n:,} {what} took {duration(took)}; about "
                     f"{duration(per_unit * max(0, self.total - n))} left, {duration(per_unit * self.total)} in all "
                     f"({self.total:,} {self.unit}{'; ' + self.note if self.note else ''})")
        self.write(self.line)
