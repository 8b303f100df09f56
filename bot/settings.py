"""Typed settings read once at start-up from the environment and `.env`."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.downloads import DEFAULT_HOSTS
from pipeline.errors import UserError
from pipeline.image_prompts.files import ImagePromptFiles, locate_image_prompt_files
from pipeline.limits import find_rng, parse_ensd
from pipeline.samplers import find_sampler
from pipeline.sizes import parse_size

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_SAFETY_MODEL = "CompVis/stable-diffusion-safety-checker"

T = TypeVar("T")
IdList = Annotated[list[int], NoDecode]
NameList = Annotated[list[str], NoDecode]
_HOST_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
QUEUE_SCHEMES = ("redis://", "rediss://", "unix://")
SECRET_SETTINGS = {"DISCORD_TOKEN", "QUEUE_URL", "WORKER_SECRET"}
"""Never echoed in a refusal: a queue URL may carry its password."""
_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Settings(BaseSettings):
    """Every setting, with its default; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )

    discord_token: SecretStr | None = None
    discord_guilds: IdList = Field(default_factory=list)
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    admin_role: str | None = None
    """Deprecated and ignored: a role name can be copied by any server; see ADMIN_ROLE_ID."""
    admin_role_id: int | None = None
    home_guild_id: int | None = None
    owner_ids: IdList = Field(default_factory=list)
    dm_policy: Literal["off", "sfw", "nsfw"] = "off"

    model: str = DEFAULT_MODEL
    models_dir: Path | None = None
    vae: str | None = None
    data_dir: Path = Path("dreamcord-data")
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    memory_mode: Literal["auto", "high", "medium", "low"] = "auto"
    attention: Literal["sdpa", "xformers"] = "sdpa"
    compile: Literal["off", "auto", "max"] = "off"
    """torch.compile the UNet (auto: on CUDA only; max: also the VAE decoder, max-autotune)."""
    safety_checker: Literal["off", "spoiler", "block"] = "off"
    """What a flagged image gets outside NSFW channels by default (servers may choose)."""
    safety_checker_model: str = DEFAULT_SAFETY_MODEL
    ip_adapter: str | None = None
    """The SD1.5 IP-Adapter for image prompts: a .safetensors path or an offline hub file."""
    image_encoder: str | None = None
    """The adapter's CLIP image encoder: a transformers folder or an offline hub folder."""

    default_steps: int = Field(25, ge=1)
    default_cfg: float = Field(7.0, ge=1, le=30)
    default_sampler: str = "DPM++ 2M"
    default_size: str = "512x512"
    default_negative: str = ""
    default_count: int = Field(4, ge=1)
    rng: str = "CPU"
    ensd: int = 0

    max_steps: int = Field(60, ge=1, le=150)
    max_pixels: int = Field(1024 * 1024, ge=64 * 64)
    max_upscale_pixels: int = Field(4096 * 4096, ge=512 * 512)
    max_images: int = Field(4, ge=1, le=16)
    max_batch: int = Field(8, ge=1, le=64)
    max_queued_per_user: int = Field(3, ge=1)
    max_running_per_user: int = Field(2, ge=1)
    memory_limit_mb: int = Field(8192, ge=256)
    worker_restart_backoff_s: float = Field(1.0, ge=0)
    worker_max_restarts: int = Field(5, ge=1)
    worker_stuck_after_s: float = Field(600.0, gt=0)

    training_max_steps: int = Field(3000, ge=1, le=50_000)
    """Most steps of one LoRA training run; servers may set a lower cap (/policy set)."""
    training_max_upload_mb: int = Field(200, ge=1, le=4096)
    """Largest training zip (attachment or link) /lora train reads."""
    training_sample_steps: int = Field(20, ge=1, le=150)
    """Sampling steps of the samples shown after each epoch."""
    training_checkpoint_every: int = Field(100, ge=1)
    """Steps between a run's checkpoints: a restart resumes from the last one."""

    queue_url: SecretStr | None = None
    """Redis for remote GPU workers (docs/scale-out.md); unset: the in-process worker."""
    worker_name: str = Field(default_factory=socket.gethostname)
    worker_secret: SecretStr | None = None
    worker_lease_s: float = Field(30.0, gt=0)
    worker_heartbeat_s: float = Field(5.0, gt=0)

    download_timeout_s: float = Field(600.0, gt=0)
    download_hosts: NameList = Field(default_factory=lambda: list(DEFAULT_HOSTS))

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # Library files on remote workers (docs/scale-out.md); QUEUE_URL turns the server on.
    worker_files_bind: str = "0.0.0.0:8765"
    """Where the bot serves library files to workers (host:port)."""
    worker_files_url: str | None = None
    """On a worker: the bot's file server, such as http://dreamcord:8765."""
    worker_files_dir: Path | None = None
    """On a worker: a read-only copy of the bot's DATA_DIR to read library files from instead."""

    @field_validator("discord_guilds", "owner_ids", "download_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("download_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        if bad := [host for host in hosts if not _HOST_NAME.fullmatch(host)]:
            raise ValueError(f"{bad[0]!r} is not a host name: give names such as civitai.com")
        return [host.lower() for host in hosts]

    @field_validator("worker_files_bind")
    @classmethod
    def _host_port(cls, value: str) -> str:
        from bot.file_server import parse_bind

        parse_bind(value)
        return value.strip()

    @field_validator("worker_files_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("give the bot's file server as http://HOST:PORT")
        return value

    @field_validator("queue_url")
    @classmethod
    def _queue_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        # The URL may hold a password, so the message names only its scheme.
        if url is not None and not url.get_secret_value().startswith(QUEUE_SCHEMES):
            scheme, found, _ = url.get_secret_value().partition("://")
            raise ValueError(
                f"{f'the scheme {scheme!r}' if found else 'a URL without a scheme'} is not "
                "supported: give a Redis URL such as "
                "redis://host:6379/0, rediss://... (TLS) or unix:///path/redis.sock"
            )
        return url

    @field_validator("worker_name")
    @classmethod
    def _worker_name(cls, name: str) -> str:
        if not _WORKER_NAME.fullmatch(name):
            raise ValueError(
                "a worker name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit: set WORKER_NAME to such a name"
            )
        return name

    @field_validator("default_sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        # The name is kept as written: an old combined one (DPM++ 2M Karras) carries a schedule.
        _as_value_error(lambda: find_sampler(value))
        return " ".join(value.split())

    @field_validator("rng")
    @classmethod
    def _known_rng(cls, value: str) -> str:
        return _as_value_error(lambda: find_rng(value))

    @field_validator("ensd", mode="before")
    @classmethod
    def _whole_ensd(cls, value: object) -> int:
        return _as_value_error(lambda: parse_ensd(value))

    @field_validator("log_level", "safety_checker", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("dm_policy", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def home_guild(self) -> int | None:
        """The server whose admins run the bot: HOME_GUILD_ID, or the only DISCORD_GUILDS one."""
        if self.home_guild_id is not None:
            return self.home_guild_id
        return self.discord_guilds[0] if len(self.discord_guilds) == 1 else None

    def serves_guild(self, guild_id: int | None) -> bool:
        """Whether interactions from this server are answered (DMs: see DM_POLICY)."""
        return guild_id is None or not self.discord_guilds or guild_id in self.discord_guilds

    def warnings(self) -> list[str]:
        """Settings that start but do not do what they seem to, for the start-up log."""
        found = []
        if self.admin_role:
            found.append(
                "ADMIN_ROLE is ignored: a role name can be copied by anyone who manages roles; "
                "set ADMIN_ROLE_ID to the role's id (and HOME_GUILD_ID) instead"
            )
        return found

    @property
    def default_width_height(self) -> tuple[int, int]:
        """DEFAULT_SIZE as (width, height); checked at start-up."""
        return parse_size(self.default_size, self.max_pixels)

    def image_prompt_files(self) -> ImagePromptFiles | None:
        """IP_ADAPTER and IMAGE_ENCODER located and checked; None when image prompts are off."""
        return locate_image_prompt_files(self.ip_adapter, self.image_encoder)

    def model_post_init(self, _context: object) -> None:
        try:
            self.image_prompt_files()
        except UserError as error:
            raise ValueError(str(error)) from None
        try:
            parse_size(self.default_size, self.max_pixels)
        except UserError as error:
            raise ValueError(f"DEFAULT_SIZE={self.default_size!r}: {error}") from None
        if self.default_steps > self.max_steps:
            raise ValueError(f"DEFAULT_STEPS={self.default_steps} is above MAX_STEPS")
        if self.default_count > self.max_images:
            raise ValueError(f"DEFAULT_COUNT={self.default_count} is above MAX_IMAGES")
        if self.dm_policy == "sfw" and self.home_guild is None:
            raise ValueError(
                "DM_POLICY=sfw checks DMs against the home server's rules: set HOME_GUILD_ID"
            )
        if self.worker_lease_s < 2 * self.worker_heartbeat_s:
            raise ValueError(
                f"WORKER_LEASE_S={self.worker_lease_s:g} must be at least twice "
                f"WORKER_HEARTBEAT_S={self.worker_heartbeat_s:g}: a busy worker renews its "
                "lease at each heartbeat, so a shorter lease takes batches from live workers"
            )
        home = self.home_guild
        if home is not None and self.discord_guilds and home not in self.discord_guilds:
            raise ValueError(f"HOME_GUILD_ID={home} is not one of DISCORD_GUILDS: add it there")


def _as_value_error(check: Callable[[], T]) -> T:
    """Run `check`, turning a UserError into the ValueError pydantic reports per field."""
    try:
        return check()
    except UserError as error:
        raise ValueError(str(error)) from None


def load_settings(env_file: Path | None = Path(".env"), **overrides: Any) -> Settings:
    """Read and check the settings once; a bad value is a UserError naming the variable.

    `overrides` are field values by name (`Any`: pydantic checks and converts each one)."""
    try:
        # pydantic's synthesized __init__ lists the fields only, not BaseSettings' _env_file.
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = "_".join(str(part) for part in item["loc"]).upper()
            message = item["msg"].removeprefix("Value error, ")
            shown = "(hidden)" if name in SECRET_SETTINGS else repr(item.get("input"))
            if name:
                problems.append(f"{name}={shown}: {message}")
            else:
                problems.append(message)
        raise UserError("bad setting: " + "; ".join(problems)) from None
