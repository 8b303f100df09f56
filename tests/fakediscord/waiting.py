"""Waiting on the fake's state without sleeping blindly, and failing fast when the client dies.

Every change (a request, a gateway frame, a dispatched event) calls ``notify``; waits wake on it
and also poll, because some conditions (client readiness, the bot's own state) change off-server.
A watched client task that dies makes every wait raise its exception at once: a payload the
client could not parse would otherwise hang the test until its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05


class ClientStopped(RuntimeError):
    """The watched client task ended without an exception while a test was still waiting."""


class Waiter:
    """Wakes waits on ``notify`` and watches the client tasks whose death must end them."""

    def __init__(self) -> None:
        self._changed: asyncio.Future[None] | None = None
        self._watched: list[asyncio.Task[Any]] = []

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Make every wait raise at once with ``task``'s exception if the task dies."""
        self._watched.append(task)

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching a task that is ending on purpose (a restart, a shutdown)."""
        self._watched.remove(task)

    def raise_if_watched_task_died(self) -> None:
        for task in self._watched:
            if not task.done():
                continue
            if task.cancelled():
                raise ClientStopped("the discord client task was cancelled")
            exc = task.exception()
            if exc is not None:
                raise exc
            raise ClientStopped("the discord client task returned; is the client closed?")

    def notify(self) -> None:
        """Wake every waiter: some state (requests, messages, gateway) changed."""
        future, self._changed = self._changed, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait_until(
        self,
        check: Callable[[], T | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "a condition",
    ) -> T:
        """Return ``check()`` once it is truthy; fail fast if a watched client task died."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.raise_if_watched_task_died()
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fakediscord: no {what} within {timeout:.1f}s")
            if self._changed is None:
                self._changed = loop.create_future()
            waiters: set[Awaitable[Any]] = {self._changed, *self._watched}
            await asyncio.wait(
                waiters, timeout=min(remaining, POLL_INTERVAL), return_when=asyncio.FIRST_COMPLETED
            )
