"""`dreamcord run` as a process: connects to the configured server, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.fakediscord import FakeDiscord

pytestmark = pytest.mark.e2e

TOKEN = "MTIz.fake.token"


async def test_run_syncs_commands_then_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    async with FakeDiscord(token=TOKEN) as server:
        env = {
            **os.environ,
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE": server.api_url,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "MODEL": "tiny",
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_LEVEL": "INFO",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=tmp_path,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await server.wait_until(
                lambda: any(c["name"] == "imagine" for c in server.commands()),
                timeout=60,
                what="the bot's command sync",
            )
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
        log = (await process.stderr.read()).decode()
    assert code == 0, log
    assert "stop signal received" in log
    assert "Traceback" not in log
