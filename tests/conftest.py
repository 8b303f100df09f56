"""Shared test setup: never reach the network, keep torch to the two CI cores, and load the
fake Discord's fixtures (``fake_discord``, ``discord``, the ``expected_errors`` marker)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["pytester", "tests.fakediscord.plugin", "tests.redis_server"]
