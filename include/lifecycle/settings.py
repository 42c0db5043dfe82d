"""One typed settings object, read from the environment (prefix ``LIFECYCLE_``).

Every knob is documented in docs/settings.md with its default. DAGs may pass values
from Airflow connections/variables in explicitly; the package itself never imports Airflow.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _find_project_dir() -> Path:
    """The checkout holding dbt_project/ (editable install), else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "dbt_project" / "dbt_project.yml").exists():
            return parent
    return Path.cwd()


# Opt-out and opt-in replies to an SMS (docs/settings.md): Twilio's own keywords (its default
# STOP filtering and opt-in list), then Ukrainian and Russian. Compared folded (``fold_keyword``).
DEFAULT_SMS_OPT_OUT_KEYWORDS = (
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    # Ukrainian
    "стоп", "відписатися", "відписатись", "відписка", "відписати", "відпишіть",
    # Russian
    "отписаться", "отписка", "отписать", "отпишите",
)
DEFAULT_SMS_OPT_IN_KEYWORDS = (
    "START", "UNSTOP", "YES",
    # Ukrainian
    "старт", "підписатися", "підписатись",
    # Russian
    "подписаться",
)


@lru_cache(maxsize=4096)  # every Settings() folds its ~50 keywords again
def fold_keyword(text: str | None) -> str:
    """A reply as compared with the keywords: NFKC, Unicode case-folded, without whitespace,
    punctuation or invisible characters (" Stop. " -> "stop", "СТОП!" -> "стоп")."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PZC")


def _keyword_list(value: object, name: str) -> tuple[str, ...]:
    """A keyword list from the environment: a JSON list, or words separated by commas."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"LIFECYCLE_{name.upper()}: not a JSON list ({exc})") from exc
        else:
            value = text.split(",")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"LIFECYCLE_{name.upper()}: expected a list of words, e.g. STOP,стоп")
    words = []
    for i, word in enumerate(value):
        if not isinstance(word, str) or not fold_keyword(word):
            raise ValueError(
                f"LIFECYCLE_{name.upper()}: item {i + 1} ({word!r}) has no letters or digits; "
                "expected words such as STOP,стоп"
            )
        words.append(word.strip())
    if not words:
        raise ValueError(f"LIFECYCLE_{name.upper()}: the list is empty; expected e.g. STOP,стоп")
    return tuple(words)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_", extra="ignore")

    warehouse_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of an external warehouse; unset = the embedded server.",
    )
    project_dir: Path = Field(default_factory=_find_project_dir)
    home: Path | None = Field(
        default=None, description="State dir of the embedded server; default <project>/.lifecycle"
    )
    embedded_port: int = Field(
        default=0, description="TCP port of the embedded server; 0 = pick a free one once."
    )
    club_timezone: str = Field(
        default="Europe/Kyiv", description="Time zone for customers without one"
    )
    default_region: str = Field(
        default="UA",
        description="ISO 3166 region of the club's phone numbers: a national number (0…) "
        "gets its country code (dbt's default_country_code var follows it)",
    )
    sms_opt_out_keywords: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_SMS_OPT_OUT_KEYWORDS,
        description="Whole-message SMS replies that opt the sender out",
    )
    sms_opt_in_keywords: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_SMS_OPT_IN_KEYWORDS,
        description="Whole-message SMS replies that lift the sender's opt-out",
    )
    rules_file: Path | None = Field(
        default=None, description="default <project>/include/rules/phases.yml"
    )
    rules_file_max_bytes: int = Field(
        default=1_000_000,
        gt=0,
        description="A larger rules file is refused before it is read whole",
    )
    transport: Literal["sandbox", "standin", "live"] = "sandbox"
    send_deadline_hours: int = Field(
        default=24, description="A message not sent this long after its send_at expires"
    )
    dispatch_batch_size: int = Field(default=2000, description="SMS rows claimed per batch")
    dispatch_email_batch_size: int = Field(
        default=50_000, description="Email rows claimed per batch (1000 per mail send request)"
    )
    dispatch_batch_s: float = Field(
        default=30.0,
        description="A batch holds at most this many seconds of traffic at the provider's rate",
    )
    dispatch_lease_seconds: int = Field(
        default=300, description="A claimed row whose worker vanished becomes 'unknown' after this"
    )
    # Providers (transport standin/live). Secrets only from the environment or, in DAGs,
    # Airflow connections; never in files.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from: str | None = Field(default=None, description="From number if no service SID")
    twilio_status_callback_url: str | None = None
    sendgrid_api_key: str | None = None
    sendgrid_from: str | None = None
    standin_url: str = Field(
        default="http://127.0.0.1:8765", description="Base URL of the stand-in provider server"
    )
    provider_timeout_s: float = 10.0
    twilio_segments_per_s: float = Field(
        default=10.0, description="Shared SMS rate (segments/s) over all dispatchers"
    )
    sendgrid_requests_per_s: float = Field(
        default=100.0,
        description="Shared email rate (mail send requests/s, up to 1000 emails each) over all "
        "dispatchers",
    )
    twilio_concurrency: int = Field(
        default=100, description="SMS requests in flight per dispatcher (one per SMS)"
    )
    sendgrid_concurrency: int = Field(
        default=8, description="Mail send requests in flight per dispatcher"
    )
    # Provider webhooks (lifecycle.delivery.webhooks): SendGrid's signed event webhook
    # verification key (base64 DER as the SendGrid console shows it, or PEM); Twilio requests
    # are verified with twilio_auth_token.
    sendgrid_webhook_public_key: str | None = None
    webhook_public_url: str | None = Field(
        default=None,
        description="Public URL of the receiver's prefix as Twilio calls it (signature base), "
        "e.g. https://airflow.example.com/lifecycle; unset = the URL the request arrived at",
    )
    webhook_max_body_bytes: int = Field(
        default=2 * 1024 * 1024, description="A webhook body larger than this is refused (413)"
    )
    webhook_timestamp_tolerance_s: int = Field(
        default=300, description="A SendGrid signature timestamp further off than this is stale"
    )
    reconcile_deadline_hours: int = Field(
        default=48,
        description="An 'unknown' outbox row with no provider event this long after it turned "
        "unknown expires",
    )
    # Orchestration (the DAGs read these from the environment at parse time).
    daily_schedule: str = Field(
        default="0 5 * * *", description="Cron (UTC) of lifecycle_daily: when a day is planned"
    )
    daily_start_date: date = Field(
        default=date(2026, 1, 1),
        description="First logical date of lifecycle_daily; the scheduler catches up from it "
        "(set it to the deploy day: older days are only skipped, one short task each)",
    )
    daily_catchup_days: int = Field(
        default=3,
        ge=0,
        description="With the wall clock, a run for a day more than this many days before "
        "today is skipped whole at its first task (no dbt build, no plan, no send): a first "
        "deploy or a long outage catches up at most this many days",
    )
    catchup_max_days: int = Field(
        default=0, description="With the wall clock, a day more than this many days before "
        "today is built but not planned (its send window has passed; phase windows catch its "
        "customers today)"
    )
    task_retries: int = Field(
        default=2, description="Retries of every lifecycle DAG task (each retry is safe)"
    )
    dispatch_shards: int = Field(
        default=1, description="Dispatcher tasks per channel in lifecycle_dispatch"
    )
    twilio_pool: str = Field(default="lifecycle_twilio", description="Airflow pool of SMS tasks")
    sendgrid_pool: str = Field(
        default="lifecycle_sendgrid", description="Airflow pool of email tasks"
    )
    # What a message costs (lifecycle.insight.report, lifecycle.insight.simulate), in the club's
    # currency.
    sms_cost: float = Field(default=0.20, ge=0, description="Cost of one SMS segment")
    email_cost: float = Field(
        default=0.02,
        ge=0,
        description="Cost of one email (SendGrid's plans come to well under 0.01 USD a mail)",
    )
    call_cost: float = Field(
        default=8.0,
        ge=0,
        description="Cost of one call made (about 3 minutes of a front-desk or call-centre "
        "person's time, answered or not)",
    )
    currency: str = Field(default="UAH", description="Currency of prices and costs in reports")
    reports_dir: Path | None = Field(
        default=None, description="Where reports are written; default <state dir>/reports"
    )
    dbt_schema: str = Field(default="analytics", description="Schema dbt builds into")
    dbt_threads: int = 2
    dbt_build_order: Literal["critical_path", "depth"] = Field(
        default="critical_path",
        description="How a build run in process (the daily DAG's dbt.build, lifecycle "
        "simulate) hands ready nodes to dbt's threads: critical_path = one node per free "
        "thread, the one with the longest chain of work after it, weighed by each node's "
        "seconds in the previous build (kept in the state dir); depth = dbt's own way (every "
        "ready node queued at once, shallowest in the graph first)",
    )
    dbt_lean: bool = Field(
        default=True,
        description="A build run in process (the daily DAG's dbt.build, lifecycle simulate) "
        "skips dbt's own work that does nothing here: a node's template is compiled once per "
        "process, events no logger receives are dropped before dbt formats them, and a "
        "thread keeps its PostgreSQL session from node to node (reset with DISCARD ALL) "
        "instead of a new one per node, compiled SQL is not written to the temporary "
        "target, result type testers are built once and events only when read; false runs "
        "dbt as it comes",
    )
    dbt_jit: bool = Field(
        default=False,
        description="PostgreSQL's JIT compilation in dbt's sessions. Off by default: the "
        "planner's estimates for the models' CTEs are high at any club size, so a server with "
        "JIT compiled a 10,000-customer model for 2.0 s of its 2.1 s (bench/RESULTS.md); "
        "true leaves the server's own setting",
    )
    dbt_work_mem: str = Field(
        default="64MB",
        description="PostgreSQL's work_mem in dbt's sessions: memory for each sort and hash "
        "of a model's query before it spills to disk. The embedded server's own setting; on a "
        "server left at PostgreSQL's 4MB the 1M-customer daily build took 49-62 s, with this "
        "and dbt_maintenance_work_mem 55 s in each of three runs (bench/RESULTS.md). Empty "
        "keeps the server's setting",
    )
    dbt_maintenance_work_mem: str = Field(
        default="256MB",
        description="PostgreSQL's maintenance_work_mem in dbt's sessions: memory for building "
        "the indexes of a table model (customer_facts has four). Empty keeps the server's",
    )
    dbt_mode: Literal["one_build", "one_task", "per_model"] = Field(
        default="one_task",
        description="How lifecycle_daily runs dbt: one_task = one `dbt build` a day in one "
        "task that fails naming every failed model, each model's result an Asset event (~10 "
        "task instances a day); one_build = the same build, then a task per model reports its "
        "result in the grid (and builds it again on a retry; ~33 task instances more a day); "
        "per_model = one Cosmos dbt task per model (a dbt start-up and project parse each)",
    )

    @field_validator("dbt_work_mem", "dbt_maintenance_work_mem", mode="before")
    @classmethod
    def _memory(cls, value: object, info: Any) -> str:
        text = str(value).strip()
        if text and not re.fullmatch(r"\d+\s*(B|kB|MB|GB|TB)?", text):
            raise ValueError(
                f"LIFECYCLE_{info.field_name.upper()}: {value!r} is not a PostgreSQL memory "
                "size; expected a number with a unit such as 64MB, 1GB or 512kB, or empty to "
                "keep the server's setting")
        return text

    @field_validator("default_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> str:
        region = str(value).strip().upper()
        if not phonenumbers.country_code_for_region(region):
            raise ValueError(
                f"LIFECYCLE_DEFAULT_REGION: {value!r} is not a region with a telephone country "
                "code; expected an ISO 3166 alpha-2 code such as UA, PL, GB"
            )
        return region

    @field_validator("sms_opt_out_keywords", "sms_opt_in_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: object, info) -> tuple[str, ...]:  # noqa: ANN001
        return _keyword_list(value, info.field_name)

    @model_validator(mode="after")
    def _keywords_disjoint(self) -> Settings:
        both = sorted(self.opt_out_words & self.opt_in_words)
        if both:
            raise ValueError(
                "LIFECYCLE_SMS_OPT_OUT_KEYWORDS and LIFECYCLE_SMS_OPT_IN_KEYWORDS share "
                f"{', '.join(both)}: a reply must mean one thing; remove it from one list"
            )
        return self

    @property
    def default_country_code(self) -> str:
        """The calling code of ``default_region`` without '+': UA -> '380'."""
        return str(phonenumbers.country_code_for_region(self.default_region))

    @property
    def opt_out_words(self) -> frozenset[str]:
        return frozenset(fold_keyword(w) for w in self.sms_opt_out_keywords)

    @property
    def opt_in_words(self) -> frozenset[str]:
        return frozenset(fold_keyword(w) for w in self.sms_opt_in_keywords)

    @property
    def state_dir(self) -> Path:
        return self.home or (self.project_dir / ".lifecycle")

    @property
    def reports_path(self) -> Path:
        return self.reports_dir or (self.state_dir / "reports")

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt_project"

    @property
    def rules_path(self) -> Path:
        return self.rules_file or (self.project_dir / "include" / "rules" / "phases.yml")


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; read again so tests can change env)."""
    return Settings()
