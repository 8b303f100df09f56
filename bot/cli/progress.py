"""A terminal progress bar for long work, fed from the worker thread's step callback."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class ProgressBar:
    """Shows step/total on stderr once the first step is done, so an early error stays one line.

    `update` may jump: batches report absolute steps.
    """

    def __init__(self, description: str, unit: str = "step") -> None:
        self._description = description
        self._unit = unit
        self._bar: tqdm | None = None

    def update(
        self, done: int, total: int | None, unit: str | None = None, note: str | None = None
    ) -> None:
        """Move to `done` of `total` (None when the total is unknown, as for some downloads).

        `unit`, when given before the first update, replaces the bar's unit (tiles, not steps);
        `note` is shown after the bar (a training run's loss).
        """
        if self._bar is None:
            self._unit = unit or self._unit
            in_bytes = self._unit == "B"
            self._bar = tqdm(
                total=total,
                desc=self._description,
                unit=self._unit,
                unit_scale=in_bytes,
                unit_divisor=1024 if in_bytes else 1000,
                file=sys.stderr,
            )
        self._bar.total = total
        if note is not None:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
