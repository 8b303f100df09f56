"""Settings: read once from the environment and .env, a bad value named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, load_settings
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_env_example_documents_exactly_the_defaults() -> None:
    from_example = load_settings(ROOT / ".env.example")
    assert from_example == load_settings(None)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch) -> None:
    env = tmp_path / ".env"
    env.write_text("DEFAULT_STEPS=30\nDEVICE=cpu\nDISCORD_GUILDS=1, 22,333\n")
    monkeypatch.setenv("DEFAULT_STEPS", "12")
    settings = load_settings(env)
    assert settings.default_steps == 12
    assert settings.device == "cpu"
    assert settings.discord_guilds == [1, 22, 333]


def test_empty_values_mean_the_default(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MODELS_DIR=\nDISCORD_TOKEN=\nDEFAULT_STEPS=\n")
    settings = load_settings(env)
    assert settings.models_dir is None
    assert settings.discord_token is None
    assert settings.default_steps == 25


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DEVICE", "gpu", "'auto', 'cuda', 'mps' or 'cpu'"),
        ("DTYPE", "fp8", "'fp16'"),
        ("MAX_STEPS", "many", "valid integer"),
        ("MAX_STEPS", "0", "greater than or equal to 1"),
        ("DEFAULT_CFG", "nan", "less than or equal to 30"),
        ("DEFAULT_SAMPLER", "Euler b", "use one of Euler a, Euler"),
        ("DEFAULT_SIZE", "500x500", "multiples of 8"),
        ("DEFAULT_STEPS", "100", "above MAX_STEPS"),
        ("DISCORD_GUILDS", "12,abc", "valid integer"),
        ("RNG", "cuda", "use CPU (Dreamcord's default), GPU"),
        ("ENSD", "31337.5", "'31337.5' is not a whole number"),
        ("ENSD", "-1", "ENSD -1 is out of range: use 0 to"),
    ],
)
def test_bad_value_names_the_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as caught:
        load_settings(None)
    message = str(caught.value)
    assert name in message
    assert says in message
    assert "\n" not in message


def test_rng_and_ensd_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNG", "nv")
    monkeypatch.setenv("ENSD", "31337")
    settings = load_settings(None)
    assert (settings.rng, settings.ensd) == ("NV", 31337)


def test_dm_policy_home_guild_and_admin_role_id(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DM_POLICY=SFW\nHOME_GUILD_ID=5\nADMIN_ROLE_ID=9\nDISCORD_GUILDS=5,6\n")
    settings = load_settings(env)
    assert (settings.dm_policy, settings.home_guild, settings.admin_role_id) == ("sfw", 5, 9)
    assert settings.serves_guild(6) and settings.serves_guild(None)
    assert not settings.serves_guild(7)
    assert load_settings(None).dm_policy == "off", "DMs are off unless the owner says"
    assert load_settings(None, discord_guilds="42").home_guild == 42, "the only server is home"
    assert load_settings(None).serves_guild(7), "no DISCORD_GUILDS: every server"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"dm_policy": "sometimes"}, "DM_POLICY"),
        ({"dm_policy": "sfw"}, "HOME_GUILD_ID"),
        ({"home_guild_id": 3, "discord_guilds": "1,2"}, "HOME_GUILD_ID=3"),
    ],
)
def test_bad_trust_settings_stop_start_up_with_the_fix(values: dict, named: str) -> None:
    with pytest.raises(UserError, match=named):
        load_settings(None, **values)


def test_admin_role_by_name_is_ignored_with_a_warning() -> None:
    assert load_settings(None).warnings() == []
    (warning,) = load_settings(None, admin_role="Mods").warnings()
    assert "ADMIN_ROLE_ID" in warning


def test_download_hosts_are_host_names(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DOWNLOAD_HOSTS=Civitai.com, cdn.example.org\nDOWNLOAD_TIMEOUT_S=120\n")
    settings = load_settings(env)
    assert settings.download_hosts == ["civitai.com", "cdn.example.org"]
    assert settings.download_timeout_s == 120
    env.write_text("DOWNLOAD_HOSTS=https://civitai.com\n")
    with pytest.raises(UserError, match="DOWNLOAD_HOSTS"):
        load_settings(env)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@redis.example:6380", "unix:///tmp/r.sock"]
)
def test_queue_url_takes_the_redis_schemes(url: str) -> None:
    settings = load_settings(None, queue_url=url)
    assert settings.queue_url is not None and settings.queue_url.get_secret_value() == url


@pytest.mark.parametrize("url", ["postgresql://u:secret@db/x", "localhost:6379", "http://r"])
def test_queue_url_of_another_scheme_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(UserError, match=r"QUEUE_URL=\(hidden\).*redis://host") as caught:
        load_settings(None, queue_url=url)
    assert "secret" not in str(caught.value) and url not in str(caught.value)


def test_worker_name_defaults_to_the_host_name_and_must_fit_a_stream_key() -> None:
    import socket

    assert load_settings(None).worker_name == socket.gethostname()
    with pytest.raises(UserError, match=r"WORKER_NAME='gpu 1'.*letters, digits"):
        load_settings(None, worker_name="gpu 1")


def test_worker_lease_must_outlast_two_heartbeats() -> None:
    assert load_settings(None, worker_lease_s=10, worker_heartbeat_s=5).worker_lease_s == 10
    with pytest.raises(UserError, match="WORKER_LEASE_S=9 must be at least twice"):
        load_settings(None, worker_lease_s=9, worker_heartbeat_s=5)
