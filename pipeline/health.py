"""The worker's liveness: whether its loop runs and whether its batch still makes progress.

One snapshot type read by `/status`, the metrics and the heartbeat file that
`dreamcord doctor --quick` (the container's health check) reads from another process, so
all three judge "dead" and "stuck" the same way. Times are wall-clock seconds (`time.time`),
since the heartbeat is read by another process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerHealth:
    """The worker as of one moment.

    `busy_since` is when the running batch started (None when idle); `last_step_at` the time
    of its latest denoising step. A busy worker is stuck when neither moved for longer than
    `stuck_after_s`: a backend call that never returns (a hung driver) looks exactly so.
    """

    alive: bool
    busy_since: float | None
    last_step_at: float | None
    restarts: int
    last_error: str | None
    stuck_after_s: float
    training: bool = False
    """Background work (a training run) takes the thread's turns between batches."""

    def stalled_for(self, now: float) -> float | None:
        """Seconds since the running batch last made progress; None when idle."""
        if self.busy_since is None:
            return None
        return now - max(self.busy_since, self.last_step_at or self.busy_since)

    def stuck(self, now: float) -> bool:
        stalled = self.stalled_for(now)
        return stalled is not None and stalled > self.stuck_after_s

    def ok(self, now: float) -> bool:
        """Alive and not stuck: jobs submitted now will run."""
        return self.alive and not self.stuck(now)

    def describe(self, now: float) -> str:
        """One line for an operator: what the worker does, or what is wrong and what to do."""
        if not self.alive:
            cause = f" (last error: {self.last_error})" if self.last_error else ""
            return f"stopped{cause}: restart the bot; the log has the details"
        stalled = self.stalled_for(now)
        if stalled is None:
            state = "training" if self.training else "idle"
        elif self.stuck(now):
            return (
                f"stuck: no progress for {stalled:.0f} s (limit {self.stuck_after_s:.0f} s): "
                "restart the bot; the log has the details"
            )
        else:
            busy = now - (self.busy_since or now)
            state = f"busy for {busy:.0f} s, last progress {stalled:.0f} s ago"
        if self.restarts:
            state += f", restarted {self.restarts} times after errors"
        return state
