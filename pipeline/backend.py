"""The boundary between the worker and the model: what a batch is and what running it returns.

The worker only knows this interface, so tests drive it with a fake backend and a subprocess
backend could replace the in-process engine without touching the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pipeline.request import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageTask:
    """One image to make: image `index` of job `job_id`."""

    job_id: str
    index: int
    request: GenerationRequest

    @property
    def seed(self) -> int:
        return self.request.image_seeds(self.index)[0]

    @property
    def variation_seed(self) -> int | None:
        return self.request.image_seeds(self.index)[1]


@dataclass(frozen=True)
class ImageResult:
    """A finished image with its A1111 parameters text.

    `flagged` is the safety checker's verdict (None: no checker ran); the image is as made.
    """

    task: ImageTask
    image: Image.Image
    parameters: str
    timings: dict[str, float] = field(default_factory=dict)
    flagged: bool | None = None


class StepCallback(Protocol):
    """Called on the worker thread after each denoising step.

    `previews` renders a cheap latent preview per task, in batch order; call it only when a
    preview is wanted, since it costs a little time on the worker thread.
    """

    def __call__(
        self, step: int, total: int, previews: Callable[[], list[Image.Image]]
    ) -> None: ...


class BatchInterrupted(Exception):
    """Raised by a backend between steps when `should_stop` said so; no results are returned."""


class OutOfDeviceMemory(Exception):
    """The device ran out of memory for this batch; the worker splits it and tries again."""


class Backend(Protocol):
    """Runs one batch of compatible image tasks (all share a batch key).

    It also says what the composition root and `/status` ask of it: the device it runs on
    ("cuda" budgets memory from the card and calibrates), the default model's name, and
    whether it can measure the peak memory of a batch (`measure_peak`, None when not).
    """

    @property
    def device(self) -> str | None: ...

    @property
    def default_model(self) -> str | None: ...

    @property
    def measure_peak(self) -> Callable[[int], int] | None: ...

    def run(
        self,
        tasks: Sequence[ImageTask],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]: ...

    def free_memory(self) -> None:
        """Return cached device memory after an out-of-memory batch, before its retry.

        The worker calls it on the model thread once the failed attempt is unreachable.
        """


@runtime_checkable
class Warmable(Protocol):
    """A backend that compiles its model for the common shapes after start (COMPILE)."""

    def warm_up_next(self) -> bool:
        """Compile one more shape on the model thread; False when none is left."""
        ...
