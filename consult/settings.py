"""One typed settings object, read once from the environment (prefix ``CONSULT_``) and passed down.

Secrets are ``SecretStr`` so they never show up in a repr, a log line or a Prefect task parameter.

Read as pydantic-settings would (``CONSULT_`` + the field's name in any case, the environment before a ``.env``
file in the working directory, list values as JSON, unknown names ignored, keyword arguments first) but without
importing it: every command reads its settings, and pydantic-settings alone cost a database-only command about
a tenth of its second (issue 15).
"""

from __future__ import annotations

import json
import os
import secrets
import time
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from consult.errors import ConsultError

ENV_PREFIX = "CONSULT_"
ENV_FILE = ".env"

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"
EXPECTATIONS_DIR = REPO_ROOT / "expectations"
EXAMPLES_DIR = REPO_ROOT / "examples"

# Where `consult form serve` listens by default: the demo's links lead somewhere real on this machine.
DEFAULT_FORM_URL = "http://127.0.0.1:8000"

MailBackend = Literal["mailbox", "smtp", "sendgrid"]


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)  # as pydantic-settings: defaults validated too

    data_dir: Path = Field(default=Path("data"), description="Local folder for the SQLite database and the mailbox.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default: a SQLite file in data_dir.")
    output_dir: Path = Field(default=Path("output"), description="Where summaries and reports are published.")

    mail_backend: MailBackend = "mailbox"
    mail_from: str = "ECCP Consultation <consultation@eccp.example>"
    mailbox_dir: Path | None = Field(default=None, description="Maildir for the mailbox backend; default data_dir/mailbox.")
    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str = Field(default="https://api.sendgrid.com", description="https://api.eu.sendgrid.com for EU data residency.")
    sendgrid_webhook_public_key: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False

    # Tokens are derived as HMAC(token_secret, round, partnership) so that reminders can carry the same link
    # while the database stores only their hash. Generated once into data_dir when not given.
    token_secret: SecretStr | None = None
    # The response link in emails: an outside survey tool's URL with {token} when set; else this engine's own
    # response form (`consult form serve`) at public_url, or on this machine when no public URL is given.
    response_url_template: str | None = None
    public_url: str | None = Field(default=None, description="Where `consult form serve` is reached, e.g. https://consult.example.org.")
    form_max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest form post accepted.")
    form_failed_lookups: int = Field(default=20, ge=1, description="Unknown-token lookups a client may make per window.")
    form_failed_lookup_window_seconds: int = Field(default=600, ge=1)

    timezone: str = "Europe/Brussels"
    reminder_days_before_close: list[int] = Field(default_factory=lambda: [14, 3])
    round_duration_days: int = 42
    mail_batch_size: int = Field(default=1000, ge=1, le=1000)

    # Scheduled deployments (deployments/prefect.yaml) and how heavy stages run.
    drop_dir: Path | None = Field(default=None, description="Folder the hourly ingest reads; default data_dir/drop.")
    task_runner: Literal["threads", "dask"] = Field(default="threads", description="dask: run tasks on Dask.")
    dask_address: str | None = Field(default=None, description="Scheduler of an existing Dask cluster (tcp://...).")

    # Limits a response file must stay within before it is read (a zip bomb is refused, naming the limit).
    xlsx_max_uncompressed_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="XLSX: total size of the archive's members once inflated."
    )
    xlsx_max_compression_ratio: int = Field(
        default=200, ge=1, description="XLSX: inflated/compressed size of any member over 1 MiB."
    )
    max_rows: int = Field(default=2_000_000, ge=1, description="Rows of one response file (any format).")
    data_docs_max_unexpected: int = Field(
        default=20, ge=1, description="Unexpected values shown per expectation in the Data Docs."
    )

    # Where flows report (consult/local_prefect.py): the local server left running in data_dir/prefect, started
    # on first use; `ephemeral` is Prefect's temporary server per command (one-off scripts, CI).
    prefect: Literal["local", "ephemeral"] = Field(default="local", description="local or ephemeral Prefect server.")
    prefect_port: int = Field(default=4200, ge=1, le=65535, description="The local server's first-choice port.")
    prefect_start_timeout: float = Field(default=90, gt=0, description="Seconds the local server may take to start.")
    prefect_health_timeout: float = Field(default=5, gt=0, description="Seconds PREFECT_API_URL may take to answer.")

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, given: Any) -> Any:
        """Each field not given as a keyword: ``CONSULT_<NAME>`` from the environment, else from ``.env``."""
        if not isinstance(given, dict):
            return given
        return {**environment_values(cls.model_fields), **given}

    @field_validator("data_dir", "output_dir", "mailbox_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolved once against the working directory where the settings are read, so that tasks (and tools
        # such as Great Expectations' Data Docs) never depend on a later working directory.
        return value.expanduser().resolve() if value is not None else None

    @field_validator("response_url_template")
    @classmethod
    def _has_token(cls, value: str | None) -> str | None:
        if value and "{token}" not in value:
            raise ValueError("CONSULT_RESPONSE_URL_TEMPLATE must contain {token}")
        return value or None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("CONSULT_PUBLIC_URL must start with http:// or https://")
        return value or None

    @field_validator("database_url")
    @classmethod
    def _no_placeholder(cls, value: str) -> str:
        if "changeme" in value.lower():
            raise ValueError("CONSULT_DATABASE_URL still holds a placeholder ('changeme')")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'consult.db').resolve()}"

    @property
    def resolved_response_url_template(self) -> str:
        """The response link with ``{token}``: the survey tool's template if set, else the engine's own form."""
        if self.response_url_template:
            return self.response_url_template
        base = (self.public_url or DEFAULT_FORM_URL).rstrip("/")
        return base + "/r/{token}"

    @property
    def resolved_drop_dir(self) -> Path:
        return self.drop_dir or self.data_dir / "drop"

    @property
    def resolved_mailbox_dir(self) -> Path:
        return self.mailbox_dir or self.data_dir / "mailbox"

    def resolved_token_secret(self) -> bytes:
        """The secret tokens are derived from: from the environment, else a file created once in data_dir.
        An empty or short secret is refused with one line (consult.tokens.check_secret)."""
        from consult.tokens import check_secret

        if self.token_secret is not None:
            return check_secret(self.token_secret.get_secret_value().encode(), source="CONSULT_TOKEN_SECRET")
        path = self.data_dir / "token-secret"
        return check_secret(load_or_create_secret(path), source=str(path))


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``, created on first use with 32 random bytes (64 hex digits).

    Created whole or not at all, never readable by others: the bytes go to a private temporary file (O_EXCL,
    mode 0600, fsync) that is then hard-linked to ``path``; linking fails if ``path`` exists, so of two first runs
    one wins and the other reads the winner's secret. A file left empty by an older version is not replaced
    (rounds may depend on it): it is refused by the caller.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, secrets.token_hex(32).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another run created it first: read its secret
        finally:
            os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    for _ in range(20):
        value = path.read_bytes().strip()
        if value:
            return value
        time.sleep(0.05)  # written by a process of an older version right now: give it a moment
    return b""


def environment_values(fields: dict[str, Any], environ: typing.Mapping[str, str] | None = None,
                       env_file: Path = Path(ENV_FILE)) -> dict[str, Any]:
    """The settings given as ``CONSULT_<NAME>`` (any case) in ``environ`` (default: the process's), else in
    ``env_file``; a list- or dict-typed value is read as JSON, as pydantic-settings reads it."""
    found: dict[str, str] = {}
    if env_file.is_file():
        from dotenv import dotenv_values

        found.update({key.lower(): value for key, value in dotenv_values(env_file).items() if value is not None})
    found.update({key.lower(): value for key, value in (os.environ if environ is None else environ).items()})
    values: dict[str, Any] = {}
    for name, info in fields.items():
        raw = found.get(ENV_PREFIX.lower() + name)
        if raw is None:
            continue
        if typing.get_origin(info.annotation) in (list, dict):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError:
                raise ConsultError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not a JSON list (e.g. [14, 3])") from None
        else:
            values[name] = raw
    return values


# Never echoed in an error message.
_SECRET_FIELDS = {"token_secret", "sendgrid_api_key", "smtp_password"}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process; a bad value stops the command with one line naming the variable."""
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first.get("loc") else ""
        given = "" if name in _SECRET_FIELDS or "input" not in first else f" (got {first['input']!r})"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConsultError(f"{ENV_PREFIX}{name.upper()}: {message}{given}") from None
