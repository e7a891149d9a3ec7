"""All configuration, read from ``LONGOPS_*`` environment variables.

Every field has a ``description``: the README's configuration table is generated from them
(``python -m longops.settings_table --write README.md``), and a test keeps the two equal.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from longops.domain.limits import DEFAULT_MAX_JSON_DEPTH
from longops.providers.registry import SIMULATED, ProviderOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LONGOPS_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./longops.db",
        description="SQLite (WAL mode; the path is relative to the current directory) or `postgresql://…`",
    )
    leader_database_url: str | None = Field(
        None,
        description="direct (non-pooler) connection for the leader lock (PgBouncer); default `DATABASE_URL`",
    )
    leader_lock_name: str = Field(
        "longops-leader",
        description="advisory lock name of the leader; distinct per deployment sharing a database",
    )
    host: str = Field(
        "127.0.0.1", description="where `serve` listens (`--host`); a non-loopback address needs an API key"
    )
    port: int = Field(8000, description="where `serve` listens (`--port`)")

    poll_interval_seconds: float = Field(60.0, gt=0, description="poll cadence of running provider batches")
    poll_jitter_seconds: float = Field(10.0, ge=0, description="random spread added to each poll interval")
    poll_batch_size: int = Field(100, ge=1, description="provider batches polled per cycle")
    poll_concurrency: int = Field(16, ge=1, description="provider calls in flight at once while polling")
    poll_max_backoff_seconds: float = Field(
        900.0, gt=0, description="cap of the backoff after provider errors (polls and submissions)"
    )
    submit_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="submitter cadence, and the first retry delay of a failed submission (doubling)",
    )
    provider_timeout_seconds: float = Field(60.0, gt=0, description="timeout of every provider call")
    provider_clock_skew_seconds: float = Field(
        5.0, ge=0, description="allowed clock difference with a provider, for reconciliation"
    )
    ingest_chunk_size: int = Field(1000, ge=1, description="results written per transaction")
    results_max_attempts: int = Field(
        10, ge=1, description="tries in a row to read an ended batch's results before it ends `failed`"
    )

    anthropic_max_requests: int = Field(
        100_000, ge=1, description="a batch with more requests is split into several Anthropic batches"
    )
    anthropic_max_bytes: int = Field(
        268_435_456, ge=1, description="a batch with a larger body is split into several Anthropic batches"
    )
    openai_max_requests: int = Field(
        50_000, ge=1, description="a batch with more requests is split into several OpenAI batches"
    )
    openai_max_bytes: int = Field(
        209_715_200, ge=1, description="a batch with a larger input file is split into several OpenAI batches"
    )
    openai_delete_files: bool = Field(
        True, description="delete an OpenAI-protocol batch's input, output and error files once ingested"
    )
    openai_compatible_base_url: str | None = Field(
        None, description="base URL (ending in `/v1`) of the built-in `openai_compatible` provider"
    )
    openai_compatible_api_key: str | None = Field(
        None, description="bearer key of the `openai_compatible` provider (optional)"
    )
    openai_compatible_concurrency: int = Field(
        16, ge=1, description="emulated-batch requests in flight per instance"
    )
    openai_compatible_max_attempts: int = Field(
        5, ge=1, description="sends of one emulated-batch request before it ends `errored`"
    )
    providers_file: str | None = Field(
        None, description="TOML file of named providers; see docs/providers.md"
    )

    simulator_url: str | None = Field(
        None, description="use a running `longops simulator` at this URL instead of the bundled one"
    )
    simulator_state_dir: str = Field(
        "./.longops-simulator", description="where the bundled simulator keeps its batches"
    )
    simulator_processing_seconds: float = Field(
        5.0, ge=0, description="seconds a bundled-simulator batch stays in progress"
    )
    simulator_error_rate: float = Field(
        0.0, ge=0, le=1, description="share of bundled-simulator requests that error, 0–1"
    )
    simulator_poll_interval_seconds: float = Field(
        2.0, gt=0, description="poll cadence of the `simulator` provider"
    )
    simulator_port: int = Field(
        0, ge=0, le=65535, description="loopback port of the bundled simulator; 0 picks a free one"
    )

    leader_retry_seconds: float = Field(
        5.0, gt=0, description="how often a standby tries to become leader (with jitter)"
    )
    job_lease_seconds: float = Field(
        30.0, gt=0, description="a running job's lease, renewed every third of it"
    )
    worker_concurrency: int = Field(50, ge=1, description="jobs one instance runs at once")
    worker_poll_seconds: float = Field(1.0, gt=0, description="how often idle workers look for due jobs")
    worker_shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="on shutdown, how long running jobs may finish before they are released"
    )
    job_retry_backoff_seconds: float = Field(
        5.0, gt=0, description="first retry delay of a failed job attempt (doubling)"
    )
    files_dir: str = Field("./longops-files", description="where uploaded JSONL files are stored")
    max_file_bytes: int = Field(
        10 * 1024**3, ge=1, description="largest upload (`POST /v1/files`), 413 above"
    )

    webhook_secret: str | None = Field(
        None,
        description="`whsec_` + base64: signs webhooks (unset: unsigned, warned); see docs/webhooks.md",
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one webhook attempt")
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="first retry delay of a failed webhook (doubling)"
    )
    webhook_max_attempts: int = Field(8, ge=1, description="webhook attempts before giving up")
    webhook_allow_private: bool = Field(False, description="allow private and loopback callback targets")

    max_request_bytes: int = Field(268_435_456, ge=1, description="largest request body (413 above)")
    max_header_bytes: int = Field(
        65_536, ge=1024, description="largest request line and headers together (431 above)"
    )
    max_headers: int = Field(100, ge=8, description="most request headers (431 above)")
    max_batch_requests: int = Field(1_000_000, ge=1, description="most requests in one batch (422 above)")
    # Input limits of issue 5 (docs/security.md): each answers 422 naming the field and the setting.
    max_metadata_keys: int = Field(64, ge=0, description="most keys in `metadata`; see docs/security.md")
    max_metadata_key_length: int = Field(128, ge=1, description="longest `metadata` key")
    max_metadata_bytes: int = Field(16_384, ge=2, description="largest `metadata` as JSON")
    max_callback_url_length: int = Field(2048, ge=1, description="longest `callback_url`")
    max_json_depth: int = Field(  # deeper than 256 would reach Python's recursion limit
        DEFAULT_MAX_JSON_DEPTH,
        ge=1,
        le=256,
        description="deepest nesting of `params`, `metadata` and job `input` (at most 256)",
    )
    handlers: str | None = Field(
        None,
        description="comma-separated modules of job handlers, current directory first; see docs/jobs.md",
    )
    prices_file: str | None = Field(
        None, description="TOML file of `[[prices]]` rows over the bundled price table; see docs/cost.md"
    )
    retention_days: float = Field(
        30.0, gt=0, description="the leader prunes terminal jobs, items, files and events older than this"
    )
    log_level: str = Field("INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`")
    access_log: bool = Field(
        True,
        description="a line per request on the `longops.access` logger (client, method, path, status, ms)",
    )

    def poll_interval_for(self, provider: str) -> float:
        """The bundled simulator answers in seconds, so it is polled more often than real providers."""
        if provider in SIMULATED:
            return min(self.poll_interval_seconds, self.simulator_poll_interval_seconds)
        return self.poll_interval_seconds

    def poll_jitter_for(self, provider: str) -> float:
        return min(self.poll_jitter_seconds, self.poll_interval_for(provider) / 4)

    def provider_options(self) -> ProviderOptions:
        return ProviderOptions(
            timeout=self.provider_timeout_seconds,
            anthropic_max_requests=self.anthropic_max_requests,
            anthropic_max_bytes=self.anthropic_max_bytes,
            openai_max_requests=self.openai_max_requests,
            openai_max_bytes=self.openai_max_bytes,
            openai_delete_files=self.openai_delete_files,
            openai_compatible_base_url=self.openai_compatible_base_url,
            openai_compatible_api_key=self.openai_compatible_api_key,
            openai_compatible_concurrency=self.openai_compatible_concurrency,
            openai_compatible_max_attempts=self.openai_compatible_max_attempts,
            providers_file=self.providers_file,
        )


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
