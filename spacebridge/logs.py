"""Logging for every entry point, with secrets redacted whoever logs them.

Libraries log what they see: httpx writes every request URL at INFO, and a Telegram Bot API URL
carries the bot token (``.../bot<TOKEN>/getUpdates``, one line per poll); drivers and HTTP clients
put URLs (with passwords) and headers into their errors. So redaction cannot be left to our own
log calls. ``install`` wraps the log-record factory, so every record any library creates is
redacted before any handler sees it (message, traceback and stack), and adds a filter to the root
logger's handlers for records made some other way. It redacts the configured secrets and strings
shaped like tokens (Telegram bot tokens, Stripe secret/restricted keys, webhook signing secrets,
Discord bot tokens, passwords in URLs, ``Authorization`` values), configured or not.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from spacebridge.config import Settings

__all__ = ["FORMAT", "REDACTED", "TOKEN_SHAPES", "RedactingFilter", "Redactor", "install", "secrets_of", "setup"]

REDACTED = "[redacted]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIN_SECRET_LEN = 8  # a shorter configured value cannot be told apart from ordinary words in a log line

TOKEN_SHAPES: tuple[re.Pattern[str], ...] = (
    # Telegram bot token <bot id>:<35 characters>, also inside .../bot<TOKEN>/<method> URLs
    re.compile(r"(?:(?<=bot)|(?<![\w-]))\d{5,16}:[A-Za-z0-9_-]{30,}"),
    # Stripe secret and restricted keys; webhook signing secrets
    re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"),
    # Discord bot token: base64 user id . timestamp . HMAC
    re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),
)
# scheme://user:PASSWORD@host: the password goes, the rest of the URL stays readable
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)([^@/?#\s]+)(@)")
# Authorization: Bearer X / Bot X / Basic X, in headers, dict reprs and curl lines alike
_AUTHORIZATION = re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?(?:bot|bearer|basic|token)\s+)[^\s'\",}]+")


class Redactor:
    """Replaces configured secrets and token-shaped strings with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        self._literal: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        # as configured, and as it looks inside a URL (percent-encoded) or taken out of one (decoded)
        new = {v for s in secrets if s for v in (s, unquote(s), quote(s, safe=""), quote_plus(s))
               if len(v) >= MIN_SECRET_LEN} - self._secrets
        if not new:
            return
        self._secrets |= new
        # longest first, so a secret that contains another is replaced whole
        self._literal = re.compile("|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        for shape in TOKEN_SHAPES:
            text = shape.sub(REDACTED, text)
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<3>", text)
        return _AUTHORIZATION.sub(rf"\g<1>{REDACTED}", text)


_MARK = "_spacebridge_redacted"


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Render the record's message, traceback and stack once, redacted (idempotent)."""
    if getattr(record, _MARK, False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when a handler formats the record
        return
    record.msg, record.args = redactor(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _format_exception(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor(record.stack_info)
    setattr(record, _MARK, True)


def _format_exception(exc_info: Any) -> str:
    return logging.Formatter().formatException(exc_info)


class RedactingFilter(logging.Filter):
    """A handler filter for records that did not come from the wrapped factory (``makeLogRecord``)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.redactor)
        return True


_REDACTOR = Redactor()
_installed = threading.Lock()
_factory_wrapped = False


def install(secrets: Iterable[str | None] = ()) -> Redactor:
    """From now on redact ``secrets`` and token shapes from every log record and uncaught traceback."""
    global _factory_wrapped
    _REDACTOR.add(*secrets)
    with _installed:
        if not _factory_wrapped:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                redact_record(record, _REDACTOR)
                return record

            logging.setLogRecordFactory(factory)
            # uncaught tracebacks go to stderr without logging; a hook someone else installed is left alone
            if sys.excepthook is sys.__excepthook__:
                sys.excepthook = _excepthook
            if threading.excepthook is threading.__excepthook__:
                threading.excepthook = _thread_excepthook
            _factory_wrapped = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(_REDACTOR))
    return _REDACTOR


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(_REDACTOR("".join(traceback.format_exception(kind, value, tb))))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(_REDACTOR(f"Exception in thread {name}:\n{text}"))


_SECRET_KEY_NAMES = re.compile(r"(?i)token|secret|password|passwd|api_?key|private")


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold: tokens, keys, webhook secrets, passwords in URLs."""
    from spacebridge.config import data_dir

    found = [s.get_secret_value() for s in (
        settings.telegram_bot_token, settings.discord_bot_token, settings.stripe_api_key,
        settings.stripe_webhook_secret, settings.telegram_webhook_secret, settings.secret_key) if s is not None]
    for url in (settings.database_url, settings.redis_url):
        try:
            password = urlsplit(url).password
        except ValueError:  # a malformed URL: config validation words it; nothing to take from it
            password = None
        if password:
            found += [password, unquote(password)]
    key_file = data_dir() / "secret.key"  # the join-link key serve made itself; never created here
    try:
        if key_file.is_file():
            found.append(key_file.read_text().strip())
    except OSError:
        pass
    for conf in settings.plugins.values():  # plugin settings such as [plugins.captions] api_key
        found += [v for k, v in conf.items() if isinstance(v, str) and _SECRET_KEY_NAMES.search(k)]
    return [s for s in found if s]


def setup(settings: Settings, *, console: bool) -> None:
    """Logging for an entry point: ``console`` (serve) logs at the configured level to stderr; every
    entry point appends to ``log_file`` when set, and every one redacts secrets."""
    root = logging.getLogger()
    if console:
        logging.basicConfig(level=settings.log_level, format=FORMAT)
        if settings.log_level != "DEBUG":
            # one INFO line per request (every long poll, every DM) is noise at INFO; its warnings stay
            logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.log_file:
        from spacebridge.config import ConfigError

        path = Path(os.path.abspath(Path(settings.log_file).expanduser()))
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == str(path) for h in root.handlers):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handler = logging.FileHandler(path, encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"log_file: cannot append to {path} ({e.strerror or e}); point "
                                  "SPACEBRIDGE_LOG_FILE at a writable file or leave it empty") from None
            handler.setFormatter(logging.Formatter(FORMAT))
            if not console:
                handler.setLevel(logging.WARNING)  # what a CLI command would print to stderr anyway
            root.addHandler(handler)
    install(secrets_of(settings))
