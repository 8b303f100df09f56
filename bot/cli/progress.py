"""A terminal progress bar for long work, fed from the worker thread's step callback."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class ProgressBar:
    """Shows step/total on stderr once the first step is done, so an early error stays one line.

    `update` may jump: batches report absolute steps.
    """

    def __init__(self, description: str) -> None:
        self._description = description
        self._bar: tqdm | None = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self._description, unit="step", file=sys.stderr)
        self._bar.total = total
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
