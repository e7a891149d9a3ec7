"""All configuration, read from ``LONGOPS_*`` environment variables (DESIGN §5 "Configuration")."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from longops.domain.limits import DEFAULT_MAX_JSON_DEPTH


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LONGOPS_", extra="ignore")

    database_url: str = "sqlite:///./longops.db"
    leader_database_url: str | None = None
    leader_lock_name: str = "longops-leader"
    host: str = "127.0.0.1"
    port: int = 8000

    poll_interval_seconds: float = Field(60.0, gt=0)
    poll_jitter_seconds: float = Field(10.0, ge=0)
    poll_batch_size: int = Field(100, ge=1)
    poll_concurrency: int = Field(16, ge=1)
    poll_max_backoff_seconds: float = Field(900.0, gt=0)
    submit_interval_seconds: float = Field(1.0, gt=0)
    provider_timeout_seconds: float = Field(60.0, gt=0)
    provider_clock_skew_seconds: float = Field(5.0, ge=0)
    ingest_chunk_size: int = Field(1000, ge=1)

    anthropic_max_requests: int = Field(100_000, ge=1)
    anthropic_max_bytes: int = Field(268_435_456, ge=1)

    simulator_url: str | None = None
    simulator_state_dir: str = "./.longops-simulator"
    simulator_processing_seconds: float = Field(5.0, ge=0)
    simulator_error_rate: float = Field(0.0, ge=0, le=1)
    simulator_poll_interval_seconds: float = Field(2.0, gt=0)

    leader_retry_seconds: float = Field(5.0, gt=0)
    job_lease_seconds: float = Field(30.0, gt=0)
    worker_concurrency: int = Field(50, ge=1)
    worker_poll_seconds: float = Field(1.0, gt=0)
    worker_shutdown_grace_seconds: float = Field(10.0, ge=0)
    job_retry_backoff_seconds: float = Field(5.0, gt=0)
    files_dir: str = "./longops-files"
    max_file_bytes: int = Field(10 * 1024**3, ge=1)

    webhook_secret: str | None = None
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_backoff_seconds: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_allow_private: bool = False

    max_request_bytes: int = Field(268_435_456, ge=1)
    max_batch_requests: int = Field(1_000_000, ge=1)
    # Input limits of issue 5 (docs/security.md): each answers 422 naming the field and the setting.
    max_metadata_keys: int = Field(64, ge=0)
    max_metadata_key_length: int = Field(128, ge=1)
    max_metadata_bytes: int = Field(16_384, ge=2)
    max_callback_url_length: int = Field(2048, ge=1)
    max_json_depth: int = Field(
        DEFAULT_MAX_JSON_DEPTH, ge=1, le=256
    )  # deeper would reach Python's recursion limit
    handlers: str | None = None
    prices_file: str | None = None  # TOML [[prices]] rows over the bundled table (docs/cost.md)
    retention_days: float = Field(30.0, gt=0)
    log_level: str = "INFO"
    access_log: bool = True

    def poll_interval_for(self, provider: str) -> float:
        """The bundled simulator answers in seconds, so it is polled more often than real providers."""
        if provider == "simulator":
            return min(self.poll_interval_seconds, self.simulator_poll_interval_seconds)
        return self.poll_interval_seconds

    def poll_jitter_for(self, provider: str) -> float:
        return min(self.poll_jitter_seconds, self.poll_interval_for(provider) / 4)


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
