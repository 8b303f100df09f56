"""Background work: long, low-priority model work (training) that the worker runs between batches.

A `BackgroundWork` advances in short `step()` calls on the model thread, and the worker takes a
step only when the queue has no batch to start, so an image job waits at most one step. While a
work exists (running or paused) its `reserved_bytes` are held back from the memory budget the
planner sizes batches with (`Capacity.reserved_bytes`), so a batch never runs out of memory
because of it. One work runs at a time; later ones wait in the order they were added and are
built (`BackgroundStart`, on the model thread) only when their turn comes, so two runs never hold
their copies of the model at once.

Plain Python: the works themselves bring torch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class BackgroundWork(Protocol):
    """One low-priority job on the model thread; every method runs there."""

    @property
    def finished(self) -> bool:
        """No step is left; the worker then closes it and its ticket is done."""
        ...

    @property
    def reserved_bytes(self) -> int:
        """Device memory it holds between steps (weights, optimizer state, caches)."""
        ...

    def step(self) -> object:
        """One short piece of work (one training step); what it returns goes to `on_step`."""
        ...

    def close(self) -> None:
        """Free what it holds; called once, when it is finished, cancelled or failed."""
        ...


BackgroundStart = Callable[[], BackgroundWork]
"""Builds the work on the model thread when its turn comes (a trainer loads its copies)."""


class BackgroundState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = frozenset({BackgroundState.DONE, BackgroundState.FAILED, BackgroundState.CANCELLED})


@dataclass(eq=False)
class BackgroundTicket:
    """One added work as the loop sees it; `ended` resolves with its last state.

    `on_step` runs on the event loop after each step with what the step returned.
    """

    key: str
    start: BackgroundStart
    on_step: Callable[[object], None]
    order: int
    state: BackgroundState = BackgroundState.WAITING
    paused: bool = False
    work: BackgroundWork | None = None
    reserved_bytes: int = 0
    error: BaseException | None = None
    ended: asyncio.Future[BackgroundState] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    cancel_asked: bool = False


class BackgroundQueue:
    """The works in the order they were added; the first one not ended is the one that runs.

    Keyed by the caller's id (a training run's id) so pause, resume and cancel need nothing
    else. Loop side only: the worker calls into works on its model thread.
    """

    def __init__(self) -> None:
        self._tickets: dict[str, BackgroundTicket] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()

    def add(
        self, key: str, start: BackgroundStart, on_step: Callable[[object], None]
    ) -> BackgroundTicket:
        if key in self._tickets:
            raise ValueError(f"background work {key} is already added")
        ticket = BackgroundTicket(key, start, on_step, next(self._order))
        self._tickets[key] = ticket
        self._changed.set()
        return ticket

    def get(self, key: str) -> BackgroundTicket | None:
        return self._tickets.get(key)

    def tickets(self) -> list[BackgroundTicket]:
        """Works not ended, in order: the first is the one that runs (or is paused)."""
        return list(self._tickets.values())

    def head(self) -> BackgroundTicket | None:
        """The work whose turn it is; a paused head keeps its turn (and its memory)."""
        return next(iter(self._tickets.values()), None)

    def runnable(self) -> BackgroundTicket | None:
        """The head, when it may take a step now."""
        head = self.head()
        if head is None or head.paused:
            return None
        return head

    def pause(self, key: str, paused: bool = True) -> bool:
        """Hold (or release) a work between its steps; False when there is no such work."""
        ticket = self._tickets.get(key)
        if ticket is None:
            return False
        ticket.paused = paused
        if ticket.state in (BackgroundState.RUNNING, BackgroundState.PAUSED):
            ticket.state = BackgroundState.PAUSED if paused else BackgroundState.RUNNING
        self._changed.set()
        return True

    def cancel(self, key: str) -> bool:
        """Ask a work to stop; the worker closes it before its next step. False: no such work."""
        ticket = self._tickets.get(key)
        if ticket is None:
            return False
        ticket.cancel_asked = True
        self._changed.set()
        return True

    def end(self, ticket: BackgroundTicket, state: BackgroundState) -> None:
        """Take an ended work off (the worker calls it after closing the work)."""
        self._tickets.pop(ticket.key, None)
        ticket.state = state
        ticket.reserved_bytes = 0
        ticket.work = None
        if not ticket.ended.done():
            ticket.ended.set_result(state)
        self._changed.set()

    @property
    def reserved_bytes(self) -> int:
        """What the built works hold: the memory image batches must leave alone."""
        return sum(ticket.reserved_bytes for ticket in self._tickets.values())

    def cancelled(self) -> list[BackgroundTicket]:
        """Works asked to stop, whose closing the worker still has to carry out."""
        return [ticket for ticket in self._tickets.values() if ticket.cancel_asked]

    def needs_the_thread(self) -> bool:
        """Whether the worker has something to do here: a step, or a cancel to carry out."""
        return self.runnable() is not None or bool(self.cancelled())

    async def changed(self) -> None:
        """Wait until a work is added, paused, resumed, cancelled or ended."""
        self._changed.clear()
        await self._changed.wait()
