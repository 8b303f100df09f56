"""Fixtures for the persistence tests: a real database file per test, and shortcuts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from data.db import Database
from data.generations import Generation, NewImage
from data.images import StoredImage
from data.jobs import Job
from data.repositories import Repositories
from pipeline.request import GenerationRequest, Mode


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "dreamcord.db")
    yield database
    await database.close()


@pytest.fixture
def repos(db: Database) -> Repositories:
    return Repositories.over(db)


def fake_stored(label: str) -> StoredImage:
    """A StoredImage as the image store would return it, without writing a file."""
    sha = hashlib.sha256(label.encode()).hexdigest()
    return StoredImage(f"{sha[:2]}/{sha[2:4]}/{sha}.png", sha, 1000 + len(label))


def new_images(count: int, seed: int = 42, label: str = "img") -> list[NewImage]:
    return [
        NewImage(fake_stored(f"{label}-{seed}-{i}"), seed + i, 512, 512, f"params {i}")
        for i in range(count)
    ]


async def running_job(
    repos: Repositories, user_id: int = 1, mode: Mode = Mode.TXT2IMG, seed: int = 42
) -> Job:
    job = await repos.jobs.create(
        GenerationRequest(prompt="a fox", seed=seed, mode=mode),
        user_id=user_id,
        guild_id=10,
        channel_id=20,
    )
    return await repos.jobs.mark_running(job.id)


async def finished_generation(
    repos: Repositories,
    user_id: int = 1,
    count: int = 2,
    parent_image_id: int | None = None,
    label: str = "img",
) -> Generation:
    """A job taken through queued -> running -> stored generation."""
    mode = Mode.VARIATION if parent_image_id else Mode.TXT2IMG
    job = await running_job(repos, user_id, mode)
    return await repos.generations.create(
        job.id, new_images(count, label=f"{label}-{job.id}"), parent_image_id=parent_image_id
    )
