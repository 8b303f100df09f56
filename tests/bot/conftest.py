"""Fixtures the service tests share: the repositories over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from data.db import Database
from data.repositories import Repositories


@pytest.fixture
async def repos(tmp_path: Path) -> AsyncIterator[Repositories]:
    db = await Database.open(tmp_path / "dreamcord.db")
    yield Repositories.over(db)
    await db.close()
