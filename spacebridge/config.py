"""Configuration: environment variables and an optional TOML file, validated once at start-up.

Read only by the composition root. Precedence: arguments > environment > TOML file > defaults.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.webrtc.candidates import CandidatePolicy


def data_dir() -> Path:
    return Path(os.environ.get("SPACEBRIDGE_DATA_DIR") or platformdirs.user_data_dir("spacebridge"))


def _config_file() -> Path | None:
    p = os.environ.get("SPACEBRIDGE_CONFIG")
    return Path(p) if p else None


ROLES = ("web", "jobs", "discord", "telegram", "media")


class ConfigError(Exception):
    """Bad configuration, with a message that names the setting and what is wrong."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPACEBRIDGE_", extra="forbid", populate_by_name=True)

    database_url: str = ""
    # A database that does not answer is an error within these times, never a hang (core/storage/engine.py)
    database_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    database_statement_timeout_s: float = Field(15.0, gt=0, le=3600)
    min_free_disk_mb: int = Field(100, ge=0, le=10_000_000)  # /readyz and doctor fail below this in the data dir
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = ""
    secret_key: SecretStr = SecretStr("")
    redis_url: str = ""
    # Namespace of this deployment's Redis keys and channels (another deployment on the same Redis
    # server must use another): "spacebridge:<database index>:" if empty
    redis_prefix: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9_.:\-]*$")
    # What this process runs (several processes share PostgreSQL and Redis; docs/deploy.md): the web
    # room and API, durable jobs, the Discord bot, the Telegram bot, media rooms. All by default.
    roles: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(ROLES))
    internal_url: str = ""  # how other processes reach this one (media offers); http://host:port if empty
    media_lease_s: float = Field(5.0, ge=1.0, le=120.0)  # a dead media process's Spaces move after this
    # HLS: the room's encode also written as segments + a rolling playlist (adapters/webrtc/hls.py)
    hls_enabled: bool = True
    hls_dir: str = ""  # <data dir>/hls if empty; point nginx (or a CDN origin) at it
    hls_segment_s: float = Field(1.0, ge=0.5, le=10.0)
    hls_list_size: int = Field(6, ge=3, le=60)
    # WebRTC listeners of one room on one media process (with one process: per room); more go to HLS
    webrtc_max_listeners: int = Field(500, ge=0, le=100_000)
    # With several media processes: a room's listeners one process takes before the next go to another
    # media process, which relays the room's encode to them (adapters/webrtc/relay.py); 0: webrtc_max_listeners
    room_listeners_per_process: int = Field(0, ge=0, le=100_000)
    ice_servers: list[str] = Field(default_factory=list)
    ice_announce: list[str] = Field(default_factory=list)  # only these host addresses go into answers
    # Remote ICE candidates the server may contact (adapters/webrtc/candidates.py): CIDRs, "global", "mdns"
    ice_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["global"])
    job_workers: int = Field(1, ge=0, le=64)
    job_lease_s: float = Field(60.0, ge=5.0, le=3600.0)  # how long a crashed worker's jobs wait before retry
    reaction_rate_per_s: float = Field(5.0, gt=0)
    # Presence (core/presence.py): a dropped connection is not a leave. The host's Space stays live this
    # long after their last connection went, a speaker (co-host, raised hand) keeps the seat this long.
    host_grace_s: float = Field(180.0, ge=0, le=86_400)
    speaker_grace_s: float = Field(60.0, ge=0, le=86_400)
    # Each process refreshes its connections this often; a connection not refreshed for presence_stale_s
    # (its process died) counts as dropped.
    presence_heartbeat_s: float = Field(10.0, ge=0.05, le=600)
    presence_stale_s: float = Field(30.0, ge=0.2, le=3600)
    log_level: str = "INFO"
    log_file: str = ""  # also append the log (secrets redacted) to this file; CLI commands add their warnings
    # Pages on these origins (scheme://host[:port], comma-separated) may open the room's WebSocket besides
    # public_url and the address serve listens on; sockets sent without an Origin (bots, scripts) are allowed
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    discord_bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices(
        "discord_bot_token", "DISCORD_BOT_TOKEN", "SPACEBRIDGE_DISCORD_BOT_TOKEN"))
    discord_api_base: str = ""  # REST base (an API proxy, or a local fake): https://discord.com/api/v10 if empty
    # "Sign in with Discord" on the web (OAuth2 code flow, docs/web-accounts.md): the application's
    # id and secret from the Developer Portal; the redirect is PUBLIC_URL/signin/discord/callback
    discord_client_id: str = Field("", pattern=r"^\d{0,20}$")
    discord_client_secret: SecretStr | None = Field(None, validation_alias=AliasChoices(
        "discord_client_secret", "DISCORD_CLIENT_SECRET", "SPACEBRIDGE_DISCORD_CLIENT_SECRET"))
    discord_gateway_url: str = ""  # gateway WebSocket (wss://gateway.discord.gg/ if empty)
    discord_ca_file: str = ""  # an extra CA bundle to trust (a TLS-inspecting proxy; the test fake's voice server)
    discord_card_interval_s: float = Field(5.0, ge=0.0, le=600)
    discord_global_per_s: float = Field(50.0, gt=0, le=10_000)  # Discord's global request limit per bot
    discord_voice: bool = True  # play the room's mix on the Stage
    discord_guild_ready_timeout_s: float = Field(2.0, ge=0.0, le=60)
    discord_interested_sync_s: float = Field(300.0, ge=1.0, le=86_400)
    discord_shard_count: int | None = Field(None, ge=1, le=100_000)  # shard the bot (docs/deploy.md)
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)  # this process's shards
    telegram_bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices(
        "telegram_bot_token", "TELEGRAM_BOT_TOKEN", "SPACEBRIDGE_TELEGRAM_BOT_TOKEN"))
    telegram_api_base: str = ""  # a local Bot API server (https://github.com/tdlib/telegram-bot-api) or a test fake
    # "Sign in with Telegram" (docs/web-accounts.md): the bot's @username for t.me deep links, and
    # whether the sign-in page also offers the Login Widget (its domain set with @BotFather's /setdomain)
    telegram_bot_username: str = Field("", pattern=r"^@?[A-Za-z][A-Za-z0-9_]{3,31}$|^$")
    telegram_login_widget: bool = False
    telegram_mode: str = Field("polling", pattern="^(polling|webhook)$")
    telegram_webhook_secret: SecretStr = SecretStr("")
    telegram_card_interval_s: float = Field(5.0, ge=0.0, le=600)
    telegram_webapp_max_age_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    # Telegram's flood limits (messages overall per second, per private chat per second, per group per minute)
    telegram_overall_per_s: float = Field(30.0, gt=0, le=1000)
    telegram_chat_per_s: float = Field(1.0, gt=0, le=1000)
    telegram_group_per_min: int = Field(20, ge=1, le=100_000)
    stripe_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices(
        "stripe_api_key", "STRIPE_API_KEY", "SPACEBRIDGE_STRIPE_API_KEY"))
    stripe_webhook_secret: SecretStr | None = Field(None, validation_alias=AliasChoices(
        "stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET", "SPACEBRIDGE_STRIPE_WEBHOOK_SECRET"))
    stripe_api_base: str = ""
    platform_fee_bps: int = Field(500, ge=0, le=10_000)
    ticket_hold_minutes: int = Field(15, ge=1, le=24 * 60)
    plugins_disabled: list[str] = Field(default_factory=list)  # installed plugins not to load
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-plugin settings ([plugins.NAME])
    plugin_setup_timeout_s: float = Field(30.0, gt=0, le=600)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        from core.storage.engine import check_url

        if v and v.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if v:
            check_url(v)  # DatabaseURLError is a ValueError: pydantic names the setting
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL")
        return v

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [r.strip() for r in v.split(",") if r.strip()]
        if isinstance(v, list):
            bad = [r for r in v if r not in ROLES]
            if bad or not v:
                raise ValueError(f"roles are a comma-separated list of {', '.join(ROLES)}" +
                                 (f" (not {', '.join(map(str, bad))})" if bad else ""))
        return v

    @field_validator("ice_allowed_networks", mode="before")
    @classmethod
    def _ice_allowed(cls, v: Any) -> Any:
        if isinstance(v, str):  # 127.0.0.0/8,::1/128 (or a JSON list, as the other list settings take)
            v = [n.strip(" \"'") for n in v.strip().removeprefix("[").removesuffix("]").replace(",", " ").split()]
        if isinstance(v, list):
            CandidatePolicy.parse(v)  # ValueError in words: which entry, and what the setting takes
        return v

    def candidate_policy(self) -> CandidatePolicy:
        return CandidatePolicy.parse(self.ice_allowed_networks)

    @field_validator("discord_shard_ids", mode="before")
    @classmethod
    def _shard_ids(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return [int(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError("shard ids are a comma-separated list of numbers, e.g. 0,1") from None
        return v

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if self.discord_shard_ids:
            if not self.discord_shard_count:
                raise ValueError("discord_shard_ids needs discord_shard_count (the total across all processes)")
            bad = [i for i in self.discord_shard_ids if not 0 <= i < self.discord_shard_count]
            if bad:
                raise ValueError(f"discord_shard_ids {bad} are outside 0..{self.discord_shard_count - 1}")
        return self

    @model_validator(mode="after")
    def _presence(self) -> Settings:
        if self.presence_stale_s < 2 * self.presence_heartbeat_s:
            raise ValueError(f"presence_stale_s ({self.presence_stale_s}) must be at least twice "
                             f"presence_heartbeat_s ({self.presence_heartbeat_s}), or live connections "
                             "would be taken for dropped ones")
        return self

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [o.strip() for o in v.split(",") if o.strip()]
        if isinstance(v, list):
            for o in v:
                if not (isinstance(o, str) and re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", o.rstrip("/"))):
                    raise ValueError(f"{o!r} is not an origin: give scheme://host[:port], e.g. https://example.org, "
                                     "comma-separated")
            v = [o.rstrip("/").lower() for o in v]
        return v

    def resolved_hls_dir(self) -> Path | None:
        if not self.hls_enabled:
            return None
        return Path(self.hls_dir) if self.hls_dir else data_dir() / "hls"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{data_dir() / 'spacebridge.sqlite3'}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def resolved_secret(self) -> bytes:
        """The signing key for join links: configured, or made once and kept in the data directory."""
        if self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value().encode()
        path = data_dir() / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _tg_secret(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if raw and not (1 <= len(raw) <= 256 and all(c.isalnum() or c in "_-" for c in raw)):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return v

    @property
    def ticketing_enabled(self) -> bool:
        return bool(self.stripe_api_key and self.stripe_webhook_secret)


def load_settings(**overrides: Any) -> Settings:
    path = _config_file()
    if path is not None and not path.is_file():
        raise ConfigError(f"SPACEBRIDGE_CONFIG points at {path}, which is not a file")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            if where in Settings.model_fields:  # name the variable people actually set
                where = f"{where} (SPACEBRIDGE_{where.upper()})"
            lines.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except ValueError as e:  # malformed TOML
        raise ConfigError(f"invalid configuration file {path}: {e}") from None
