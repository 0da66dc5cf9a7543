"""Settings: the one place fitrec reads its environment.

All knobs come from ``FITREC_*`` environment variables (or a ``.env`` file).
Nothing happens at import; call :func:`get_settings` to build them once.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Installed from a wheel, feature_repo/ sits beside pipeline/ in site-packages too.
FEATURE_REPO = PROJECT_ROOT / "feature_repo"
# A checkout keeps its data in var/ beside pyproject.toml; an installed fitrec in ./var.
DEFAULT_DATA_DIR = (
    PROJECT_ROOT / "var" if (PROJECT_ROOT / "pyproject.toml").exists() else Path("var")
)
MODEL_NAME = "fitrec-recommender"
# The ranking metrics the evaluation reports (pipeline.model.metrics), in MLflow spelling.
PROMOTION_METRIC = re.compile(r"(recall|ndcg|hr|mrr)_at_(10|20|50)|map_at_12")
CHAMPION = "champion"
CHALLENGER = "challenger"
# The public development key: anyone can reverse pseudonyms made with it (enumerate ids).
DEV_PSEUDONYM_KEY = "fitrec-dev-only-key"


class Settings(BaseSettings):
    """Runtime configuration; defaults are the embedded laptop profile.

    ``FITREC_PROFILE=production`` is the one switch to a team's services: a Prefect server, an
    MLflow tracking server (both on PostgreSQL) and Redis, at the ``*_url`` settings below
    unless given explicitly.
    """

    # hide_input_in_errors: a bad FITREC_REDIS_URL must not print its password in the error.
    # env_file: the project's .env, then one in the working directory (later files win), so
    # that stock Feast run in feature_repo/ reads what fitrec reads (pipeline.features.store).
    model_config = SettingsConfigDict(
        env_prefix="FITREC_",
        env_file=(PROJECT_ROOT / ".env", ".env"),
        extra="ignore",
        hide_input_in_errors=True,
    )

    profile: Literal["embedded", "production"] = "embedded"
    prefect_api_url: str = Field(
        default="http://127.0.0.1:4200/api", description="Prefect server (production profile)."
    )
    mlflow_server_url: str = Field(
        default="http://127.0.0.1:5000", description="MLflow tracking server (production)."
    )
    production_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Online store in the production profile."
    )
    schedule_cron: str = Field(default="0 2 * * *", description="Nightly retrain schedule.")
    schedule_timezone: str = Field(default="UTC", description="Time zone of the schedule.")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Root of raw drops, curated Parquet, features, Feast and MLflow files.",
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "redis://[[user]:password@]host:port[/db][?options], or "
            "redis+cluster://[[user]:password@]host:port,host:port,...[?options] for a Redis "
            "Cluster; rediss:// and rediss+cluster:// for TLS. Credentials percent-encoded "
            "(user is an ACL user, none means 'default'). Options are redis-py's URL "
            "options, e.g. for verified TLS ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem "
            "(ssl_certfile=...&ssl_keyfile=... for a client certificate, "
            "ssl_check_hostname=false only if the certificate does not name the host); "
            "ssl_* options need rediss://. Serving's redis_timeout_seconds also bounds the "
            "TLS handshake of each new connection. When set, Feast's online store is Redis, "
            "else SQLite."
        ),
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Defaults to sqlite:///<data_dir>/mlflow.db."
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Defaults to <data_dir>/mlartifacts."
    )
    experiment_name: str = "fitrec"
    model_name: str = MODEL_NAME
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_KEY),
        description=(
            "HMAC key for customer pseudonyms (and, derived, for sealed text); required in "
            "the production profile, where the public development default is refused."
        ),
    )
    pseudonym_previous_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Keys being rotated out, comma-separated, newest first: sealed text made under "
            "them still opens, and serving logs pseudonymised under them are translated at "
            "ingest (see README, key rotation)."
        ),
    )
    promotion_metric: str = Field(
        default="recall_at_20",
        description="Gate metric: recall, ndcg, hr or mrr at 10, 20 or 50, or map_at_12.",
    )
    promotion_tolerance: float = Field(
        default=0.0, ge=0.0, description="How far behind a non-inferior candidate may be."
    )
    promotion_rule: Literal["superior", "non_inferior"] = Field(
        default="superior",
        description=(
            "superior: promote only if the 95% interval of the paired difference to the "
            "champion is above 0; non_inferior: unless it is below -promotion_tolerance."
        ),
    )
    promotion_requires_online_win: bool = Field(
        default=False,
        description=(
            "A candidate that passes the offline gate stays the challenger until an "
            "experiment's verdict says it wins online (fitrec experiment analyse); the win is "
            "recorded on the version with the experiment's id. The first model is promoted "
            "without one (there is nothing to test it against)."
        ),
    )
    rules_path: Path | None = Field(
        default=None, description="Retailer business rules (YAML or TOML); none: defaults."
    )
    serving_max_models: int = Field(
        default=3,
        ge=1,
        le=8,
        description=(
            "Most model versions one serving process holds at once (the champion and the "
            "experiments' arms; each further version costs about 140 MB resident with 10,000 "
            "items, benchmarks/serving.py). An experiment "
            "needing more is refused at load with a clear error, the champion keeps serving."
        ),
    )
    serving_log_exposures: bool = Field(
        default=True,
        description=(
            "Log every answer served (recommendation_id, experiment, variant, items) to the "
            "event log: what clicks, purchases and returns are attributed to."
        ),
    )
    serving_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often serving checks whether the champion moved."
    )
    serving_cache_seconds: float = Field(
        default=30.0, ge=0, description="TTL of cached customer features and cold-start answers."
    )
    serving_candidates: int = Field(
        default=200, ge=10, description="Candidates ranked and filtered per request."
    )
    serving_ranking_weight: float = Field(
        default=0.2,
        ge=0,
        description="Weight of log P(purchase) + log P(keep) next to the retrieval score.",
    )
    redis_timeout_seconds: float = Field(
        default=0.05, gt=0, description="Serving's Redis timeout: fail fast, answer degraded."
    )
    store_missing_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Share of recent lookups of customers in the model's vocabulary that found no "
            "online features above which /health says degraded (features_missing)."
        ),
    )

    # --- the HTTP API: who may call it, how much, how big (serving/security.py) ----------
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "SHA-256 hex digests of the accepted API keys, comma-separated (several: rotation). "
            "None: the API is open (embedded profile only; production refuses to start)."
        ),
    )
    api_protect_probes: bool = Field(
        default=False, description="Require an API key on /health and /metrics too."
    )
    api_rate_limit: str = Field(
        default="1000/second",
        description="Requests per key (or per client address when open), `limits` notation.",
    )
    api_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body; more is a 413."
    )
    redis_breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive failed Redis calls that open the breaker."
    )
    redis_breaker_reset_seconds: float = Field(
        default=5.0, gt=0, description="Open breaker's cool-down before one probe call."
    )
    events_max_future_seconds: float = Field(
        default=86_400.0,
        ge=0,
        le=366 * 86_400,
        description="How far in the future an event's ts may be.",
    )
    events_max_age_days: int = Field(
        default=30, ge=1, le=3660, description="How old an event's ts may be (ingest horizon)."
    )
    events_sync_seconds: float = Field(
        default=0.2, gt=0, description="Longest time an accepted event waits for fsync."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins a browser may call the API from (CORS), comma-separated, e.g. "
            "https://shop.example.com; `*` for any. None (the default): no CORS headers."
        ),
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Serving's access log lines: one JSON object, or text."
    )
    access_log: bool = Field(
        default=True, description="Log one line per HTTP request (serving.access logger)."
    )

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _key_hashes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        if isinstance(value, list):
            value = [str(v).strip().lower() for v in value]
            if not all(re.fullmatch(r"[0-9a-f]{64}", v) for v in value):
                raise ValueError(
                    "FITREC_API_KEY_HASHES: each entry must be a SHA-256 hex digest "
                    "(python -m serving.security hash-key)"
                )
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as error:
            raise ValueError(f"FITREC_API_RATE_LIMIT: {error} (e.g. 200/second)") from None
        return value

    @field_validator("promotion_metric")
    @classmethod
    def _gate_metric(cls, value: str) -> str:
        if not PROMOTION_METRIC.fullmatch(value):
            raise ValueError(
                f"FITREC_PROMOTION_METRIC: {value!r} is not a ranking metric (recall, ndcg, hr "
                "or mrr _at_ 10, 20 or 50, or map_at_12; e.g. recall_at_20)"
            )
        return value

    @field_validator("promotion_rule", mode="before")
    @classmethod
    def _rule(cls, value: object) -> object:
        rule = value.strip().lower().replace("-", "_") if isinstance(value, str) else value
        if rule not in ("superior", "non_inferior"):
            raise ValueError(f"FITREC_PROMOTION_RULE: {value!r} is not superior or non_inferior")
        return rule

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        from pipeline.redis_url import RedisTarget

        try:
            RedisTarget.parse(value)
        except ValueError as error:
            raise ValueError(
                f"FITREC_REDIS_URL: {error} (redis://[user:password@]host:port[/db], "
                "rediss://..., or redis+cluster://host:port,host:port,...; percent-encode "
                "special characters of the password)"
            ) from None
        return value

    @field_validator("pseudonym_previous_keys", mode="before")
    @classmethod
    def _key_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _production_defaults(self) -> Settings:
        if self.profile == "production":
            key = self.pseudonym_key.get_secret_value()
            if not key or key == DEV_PSEUDONYM_KEY:
                raise ValueError(
                    "FITREC_PSEUDONYM_KEY must be set to a secret in the production profile "
                    "(the development default is public: pseudonyms made with it can be "
                    "reversed by enumerating customer ids)"
                )
        if self.profile == "production" and not self.redis_url:
            self.redis_url = self.production_redis_url
        return self

    @property
    def uses_dev_pseudonym_key(self) -> bool:
        return self.pseudonym_key.get_secret_value() == DEV_PSEUDONYM_KEY

    @property
    def pseudonym_keys(self) -> list[str]:
        """Every pseudonym key in use: the current one first, then those being rotated out."""
        keys = [self.pseudonym_key.get_secret_value()]
        keys += [k.get_secret_value() for k in self.pseudonym_previous_keys]
        return list(dict.fromkeys(k for k in keys if k))

    @property
    def redis_cluster(self) -> bool:
        return bool(self.redis_url and "+cluster://" in self.redis_url)

    # Derived locations: one definition each.
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def experiments_dir(self) -> Path:
        """Started experiments: each one's validated file and its state (see
        :mod:`pipeline.experiments.state`)."""
        return self.data_dir / "experiments"

    @property
    def curated_dir(self) -> Path:
        return self.data_dir / "curated"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def privacy_dir(self) -> Path:
        """Erasure tombstones (pseudonyms only) and audit records."""
        return self.data_dir / "privacy"

    @property
    def events_dir(self) -> Path:
        """Durable log of events accepted by serving (ingested by the nightly flow)."""
        return self.data_dir / "events"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.profile == "production":
            return self.mlflow_server_url
        return f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.data_dir / "mlartifacts").as_uri()

    @property
    def online_store(self) -> str:
        return "redis" if self.redis_url else "sqlite"


_warned_dev_key = False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (tests clear the cache to override).

    The production profile refuses the development pseudonym key (a ``ValidationError`` at
    start-up); elsewhere its use is logged once per process as a warning."""
    global _warned_dev_key
    settings = Settings()
    if settings.uses_dev_pseudonym_key and not _warned_dev_key:
        _warned_dev_key = True
        log.warning(
            "FITREC_PSEUDONYM_KEY is the public development key: customer pseudonyms are "
            "reversible; set a secret outside the demo (required with FITREC_PROFILE=production)"
        )
    return settings
