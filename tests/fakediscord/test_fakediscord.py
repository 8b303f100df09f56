"""The fake Discord server and harness, driven by a small real discord.py bot.

The bot below is defined here on purpose: it exercises every Discord feature Dreamcord's cogs
use (defer + follow-up with a file, DynamicItem buttons, autocomplete, modals, subcommands,
channel messages), so these tests pin the fake's behaviour independently of Dreamcord's code.
It reaches the fake the way any bot reaches a Discord-compatible server, here with Dreamcord's
``point_discord_at``.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.discord_bot import point_discord_at
from tests.fakediscord import FakeDiscord, Upload, run_bot
from tests.fakediscord.gateway import GATEWAY_PATH, RESUME_GATEWAY_PATH

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 64, 32) + b"\x08\x02" + bytes(64)
LORAS = ["ghibli", "ghost", "pixel-art"]


class Reroll(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"t:reroll:(?P<n>\d+)"):
    """A persistent button: its state lives in the custom_id, like Dreamcord's grid buttons."""

    def __init__(self, n: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll", custom_id=f"t:reroll:{n}", style=discord.ButtonStyle.primary
            )
        )
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> Reroll:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None).add_item(Reroll(self.n + 1))
        await interaction.response.edit_message(content=f"rerolled {self.n}", view=view)


class PromptModal(discord.ui.Modal, title="Edit prompt"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", default="a fox"
    )
    seed: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Seed", custom_id="seed", default="42"
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            f"prompt={self.prompt.value} seed={self.seed.value}", ephemeral=True
        )


class HarnessBot(commands.Bot):
    def __init__(self, server: FakeDiscord) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.server = server
        self.release_slow = asyncio.Event()
        self.slow_error: discord.HTTPException | None = None

    async def login(self, token: str) -> None:
        point_discord_at(self.server.api_url, self.server.gateway_url)
        await super().login(token)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5-second pause before identifying again: the fake limits no identifies."""

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll)
        tree = self.tree

        @tree.command(description="Make an image")
        @app_commands.describe(prompt="What to draw")
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            lora: str | None = None,
            image: discord.Attachment | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True)
            source = f" from {len(await image.read())} bytes" if image else ""
            view = discord.ui.View(timeout=None).add_item(Reroll(1))
            await interaction.followup.send(
                f"done: {prompt} lora={lora}{source}",
                file=discord.File(io.BytesIO(PNG), "grid.png"),
                view=view,
            )

        @imagine.autocomplete("lora")
        async def lora_names(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=n, value=n) for n in LORAS if n.startswith(current)]

        @tree.command(description="Edit a prompt in a form")
        async def edit(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal())

        lora = app_commands.Group(name="lora", description="Manage LoRAs")

        @lora.command(name="add", description="Add a LoRA")
        async def lora_add(
            interaction: discord.Interaction, name: str, weight: float = 1.0
        ) -> None:
            await interaction.response.send_message(f"added {name} at {weight}", ephemeral=True)

        tree.add_command(lora)

        @tree.command(description="Post and edit a channel message")
        async def post(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            message = await interaction.channel.send("draft")
            await message.edit(content="final")
            await interaction.followup.send("posted", ephemeral=True)

        @tree.command(description="Answer after the token may have expired")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release_slow.wait()
            try:
                await interaction.edit_original_response(content="late answer")
            except discord.HTTPException as exc:
                self.slow_error = exc
                assert isinstance(interaction.channel, discord.TextChannel)
                await interaction.channel.send("delivered by the bot token")

        await tree.sync()


async def test_slash_command_defers_then_follow_up_replaces_thinking_message() -> None:
    async with run_bot(HarnessBot) as fake:
        ix = await fake.slash("imagine", prompt="a fox in the snow", user=fake.bob)

        response = await ix.wait_for_response()
        grid = await ix.wait_for_followup(lambda m: not m.loading)

        assert response.name == "DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE"
        assert ix.ack_latency is not None and ix.ack_latency < 3
        assert grid.id == ix.original_message_id  # the follow-up replaced "thinking..."
        assert grid.content == "done: a fox in the snow lora=None"
        assert grid.payload["interaction_metadata"]["user"]["id"] == str(fake.bob.id)
        assert [b["custom_id"] for b in grid.buttons()] == ["t:reroll:1"]
        assert ix.payload["member"]["permissions"] == str(fake.scene.permissions(fake.bob))
        fake.assert_no_errors()


async def test_command_sync_records_options_subcommands_and_autocomplete() -> None:
    async with run_bot(HarnessBot) as fake:
        names = sorted(c["name"] for c in fake.commands())
        imagine = {o["name"]: o for o in fake.command("imagine")["options"]}
        lora_add = fake.command("lora")["options"][0]

        assert names == ["edit", "imagine", "lora", "post", "slow"]
        assert fake.server.command_syncs == 1
        assert imagine["prompt"]["type"] == 3 and imagine["prompt"]["required"] is True
        assert imagine["lora"]["autocomplete"] is True
        assert imagine["image"]["type"] == 11 and not imagine["image"].get("required")
        assert (lora_add["name"], lora_add["type"]) == ("add", 1)
        sync = await fake.wait_for(lambda r: r.method == "PUT" and r.route.endswith("/commands"))
        assert {c["name"] for c in sync.json} == set(names)


async def test_button_click_on_dynamic_item_edits_the_message() -> None:
    async with run_bot(HarnessBot) as fake:
        ix = await fake.slash("imagine", prompt="fox")
        grid = await ix.wait_for_followup(lambda m: bool(m.buttons()))

        click = await fake.click(grid, "Reroll", user=fake.alice)
        response = await click.wait_for_response()

        assert response.name == "UPDATE_MESSAGE"
        assert click.payload["message"]["id"] == str(grid.id)
        assert grid.content == "rerolled 1"
        assert grid.buttons()[0]["custom_id"] == "t:reroll:2"
        assert len(grid.history) == 3  # thinking, the grid, the rerolled grid
        await (await fake.click(grid, "t:reroll:2")).wait_for_response()
        assert grid.content == "rerolled 2"
        fake.assert_no_errors()


async def test_autocomplete_returns_the_bots_choices() -> None:
    async with run_bot(HarnessBot) as fake:
        choices = await fake.autocomplete("imagine", "lora", "gh", prompt="a fox")

        assert [c["value"] for c in choices] == ["ghibli", "ghost"]
        sent = fake.server.interactions[max(fake.server.interactions)].payload
        assert {"name": "lora", "type": 3, "value": "gh", "focused": True} in sent["data"][
            "options"
        ]


async def test_modal_is_opened_and_submitted_with_typed_values() -> None:
    async with run_bot(HarnessBot) as fake:
        opened = await fake.slash("edit", user=fake.admin)
        await opened.wait_for_response()
        assert opened.modal is not None and opened.modal["title"] == "Edit prompt"

        submit = await fake.submit_modal(opened, {"prompt": "a cat"})
        reply = await submit.wait_for_original()

        assert reply.content == "prompt=a cat seed=42"  # the untouched input kept its default
        assert reply.ephemeral
        fake.assert_no_errors()


async def test_subcommand_and_ephemeral_reply() -> None:
    async with run_bot(HarnessBot) as fake:
        ix = await fake.slash("lora add", name="ghibli", weight=0.7)
        reply = await ix.wait_for_original()

        assert reply.content == "added ghibli at 0.7"
        assert reply.ephemeral
        with pytest.raises(LookupError):
            await fake.slash("lora remove", name="x")
        with pytest.raises(ValueError, match="required"):
            await fake.slash("imagine")


async def test_multipart_files_and_uploaded_attachments_round_trip_through_the_cdn() -> None:
    async with run_bot(HarnessBot) as fake:
        upload = Upload("init.png", PNG + b"extra")
        ix = await fake.slash("imagine", prompt="fox", image=upload, channel=fake.nsfw)
        grid = await ix.wait_for_followup(lambda m: bool(m.attachments))

        attachment = grid.attachments[0]
        async with aiohttp.ClientSession() as http, http.get(attachment["url"]) as got:
            served = await got.read()
        request = await fake.wait_for(lambda r: r.path.startswith("/webhooks/") and bool(r.files))

        assert grid.channel_id == fake.nsfw.id
        assert grid.content.endswith(f"from {len(PNG) + 5} bytes")
        assert (attachment["filename"], attachment["width"], attachment["height"]) == (
            "grid.png",
            64,
            32,
        )
        assert grid.attachment_data("grid.png") == served == PNG
        assert request.files[0].filename == "grid.png"
        assert "resolved" in ix.payload["data"]


async def test_a_file_over_the_upload_limit_is_refused_and_interactions_carry_it() -> None:
    async with run_bot(HarnessBot) as fake:
        fake.limit_uploads(len(PNG) - 1)
        ix = await fake.slash("imagine", prompt="fox", image=Upload("init.png", PNG))
        refused = await fake.wait_for(
            lambda r: r.path.startswith("/webhooks/") and bool(r.files) and r.status != 0
        )

        assert ix.payload["attachment_size_limit"] == len(PNG) - 1
        assert refused.status == 413
        assert not any(m.attachments for m in fake.messages(fake.general))


async def test_rate_limited_edit_is_retried_by_discord_py() -> None:
    async with run_bot(HarnessBot) as fake:
        rule = fake.rate_limit("PATCH /channels/*/messages/*", count=2, retry_after=0.05)

        ix = await fake.slash("post")
        await ix.wait_for_followup(lambda m: m.content == "posted")
        posted = await fake.wait_for_message(fake.general, lambda m: not m.ephemeral)

        assert posted.content == "final"
        assert len(rule.hits) == 2
        patches = [r for r in fake.requests if r.method == "PATCH" and "/channels/" in r.path]
        assert [r.status for r in patches] == [429, 429, 200]


async def test_expired_token_gives_invalid_webhook_token() -> None:
    async with run_bot(HarnessBot) as fake:
        ix = await fake.slash("slow")
        await ix.wait_for_response()

        fake.expire_token(ix)
        bot = fake.client
        assert isinstance(bot, HarnessBot)
        bot.release_slow.set()
        fallback = await fake.wait_for_message(
            predicate=lambda m: m.content == "delivered by the bot token"
        )

        assert bot.slow_error is not None
        assert (bot.slow_error.status, bot.slow_error.code) == (401, 50027)
        assert fallback.payload.get("webhook_id") is None


async def test_events_sent_during_a_gateway_outage_are_replayed_after_resume() -> None:
    async with run_bot(HarnessBot) as fake:
        async with fake.gateway_outage():
            ix = await fake.slash("lora add", name="offline")
            await asyncio.sleep(0.1)
            assert ix.response is None  # the client cannot have seen it yet

        reply = await ix.wait_for_original()
        await fake.drop_gateway()  # and a plain drop resumes too

        assert reply.content == "added offline at 1.0"
        assert fake.server.session is not None and fake.server.session.resumes == 2
        first, *resumed = fake.server.gateway_connections
        assert first.path == GATEWAY_PATH
        assert {c.path for c in resumed} == {RESUME_GATEWAY_PATH}
        assert first.query["v"] == "10" and first.query["encoding"] == "json"
        assert "compress" in first.query
        assert [f["op"] for f in fake.server.gateway_received if f["op"] in (2, 6)] == [2, 6, 6]


async def test_reconnect_resumes_and_an_invalid_session_makes_the_client_identify_again() -> None:
    async with run_bot(HarnessBot) as fake:
        first = fake.server.session
        fake.server.request_reconnect()
        await fake.wait_resumed(1)
        fake.server.invalidate_session()
        await fake.wait_until(lambda: fake.server.session is not first, what="a new session")
        reply = await (await fake.slash("lora add", name="after")).wait_for_original()

        assert reply.content == "added after at 1.0"
        assert [f["op"] for f in fake.server.gateway_received if f["op"] in (2, 6)] == [2, 6, 2]


async def test_client_task_crash_fails_the_waiting_test_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(KeyError, match="attachment_size_limit"):
        async with run_bot(HarnessBot) as fake:
            ix = await fake.slash("lora add", name="x")
            await ix.wait_for_original()
            # The payload mistake discord.md warns about: discord.py's parser dies on it.
            broken = dict(ix.payload, id=str(fake.server.new_id()))
            del broken["attachment_size_limit"]
            fake.server.dispatch("INTERACTION_CREATE", broken)
            await fake.wait_for_message(predicate=lambda m: False, timeout=30)
    assert time.monotonic() - started < 10


async def test_setup_hook_crash_surfaces_from_run_bot() -> None:
    class Broken(HarnessBot):
        async def setup_hook(self) -> None:
            raise RuntimeError("setup failed")

    with pytest.raises(RuntimeError, match="setup failed"):
        async with run_bot(Broken):
            pass


async def test_rest_answers_like_discord_for_a_wrong_token() -> None:
    async with FakeDiscord(token="right") as server, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bot wrong"}
        async with http.get(server.api_url + "/users/@me", headers=headers) as response:
            body = await response.json()
            content_type = response.headers["Content-Type"]
        async with http.get(
            server.api_url + "/users/@me", headers={"Authorization": "Bot right"}
        ) as response:
            me = await response.json()

        assert response.status == 200 and me["bot"] is True
        assert content_type == "application/json"
        assert body["message"] == "401: Unauthorized"
        assert [r.status for r in server.requests] == [401, 200]
