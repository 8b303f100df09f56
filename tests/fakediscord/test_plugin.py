"""The pytest plugin as another project would use it: a bot factory, the discord fixture, and
ERROR records that fail a test unless it declares them."""

from __future__ import annotations

import logging

import pytest

from tests.fakediscord import error_log

pytestmark = pytest.mark.timeout(120)

A_PROJECTS_TESTS = '''
import logging

import discord
import pytest
from discord import app_commands

from bot.discord_bot import point_discord_at


class Bot(discord.Client):
    """A bot with one command whose handler logs an error and still answers."""

    def __init__(self, server):
        super().__init__(intents=discord.Intents.default())
        self.server = server
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(description="Try and fail")
        async def fail(interaction: discord.Interaction) -> None:
            logging.getLogger("mybot.jobs").error("could not do it", exc_info=ValueError("boom"))
            await interaction.response.send_message("sorry")

    async def login(self, token):
        point_discord_at(self.server.api_url, self.server.gateway_url)
        await super().login(token)

    async def setup_hook(self):
        await self.tree.sync()


@pytest.fixture
def discord_bot_factory():
    return Bot


async def fail(discord):
    ix = await discord.slash("fail")
    assert (await ix.wait_for_original()).content == "sorry"


async def test_unexpected(discord):
    await fail(discord)


@pytest.mark.expected_errors("could not do", reason="the test makes the command fail")
async def test_expected(discord):
    await fail(discord)


@pytest.mark.expected_errors("never logged", reason="a declaration that is not true")
async def test_not_logged(discord):
    pass


@pytest.mark.expected_errors("could not do")
async def test_without_reason(discord):
    await fail(discord)
'''


def test_the_discord_fixture_fails_on_undeclared_errors_and_false_declarations(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.fakediscord.plugin"]')
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(test_project=A_PROJECTS_TESTS)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    outcomes = result.parseoutcomes()
    # A teardown error leaves the call passed: three calls pass, three tests error.
    assert (outcomes.get("passed"), outcomes.get("errors")) == (3, 3), result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_unexpected*",
            "*mybot.jobs: could not do it*",
            "*ValueError: boom*",
            "*expected an ERROR record matching 'never logged'; none was logged*",
            "*test_without_reason: expected_errors needs reason=*",
        ],
        consecutive=False,
    )


def _record(name: str, message: str, error: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, (), exc_info)


def test_a_pattern_matches_the_message_or_the_exception_and_lets_only_that_record_pass() -> None:
    expected = _record("bot.service", "could not deliver job 7", KeyError("token"))
    error_log.check([expected], ["could not deliver"])
    error_log.check([expected], [r"KeyError: 'token'"])
    with pytest.raises(AssertionError) as raised:
        error_log.check([expected, _record("cogs.results", "something else")], ["deliver"])
    assert "cogs.results: something else" in str(raised.value)
    assert "could not deliver" not in str(raised.value)


def test_the_error_log_keeps_only_error_records_of_the_watched_loggers() -> None:
    log = error_log.ErrorLog(["bot", "cogs"])
    with log.attached():
        logging.getLogger("bot.service").error("kept")
        logging.getLogger("botany").error("another package")
        logging.getLogger("cogs").warning("a warning")
    assert [r.getMessage() for r in log.records] == ["kept"]
