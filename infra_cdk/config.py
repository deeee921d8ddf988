"""Names, defaults and deploy-time configuration of the Ragline CDK app, all in one place.

Everything a deployer may change is a CDK context key (``cdk deploy -c ragline:stage=prod``)
listed in ``CONTEXT_DEFAULTS`` with its default; ``RaglineConfig.from_context`` reads and
validates them once. Everything else here is a fixed name or sizing the constructs share.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------

INFRA_DIR = Path(__file__).resolve().parent
REPO_ROOT = INFRA_DIR.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
LAYER_SOURCE_DIR = REPO_ROOT / "layers" / "python"  # holds the ``ragline`` package
RAGLINE_PACKAGE_DIR = LAYER_SOURCE_DIR / "ragline"
LAYER_REQUIREMENTS_FILE = INFRA_DIR / "layer" / "requirements.txt"
LAYER_CONSTRAINTS_FILE = INFRA_DIR / "layer" / "constraints.txt"
LAYER_PLACEHOLDER_DIR = INFRA_DIR / "assets" / "layer_placeholder"
OPENSEARCH_SECURITY_HANDLER_DIR = INFRA_DIR / "assets" / "opensearch_security"

# --------------------------------------------------------------------------------------
# Fixed names
# --------------------------------------------------------------------------------------

SERVICE = "ragline"
METRICS_NAMESPACE = "Ragline"
DOCUMENTS_PREFIX = "tenants/"
# Blue-green index builds (ragline index build) keep their manifests under this prefix of the
# documents bucket (outside tenants/, so no ingest notification fires) and hand Bedrock batch
# inference its input and output files under INDEX_BATCH_PREFIX.
INDEX_VERSIONS_PREFIX = "_index_versions/"
INDEX_BATCH_PREFIX = f"{INDEX_VERSIONS_PREFIX}batch/"
# OpenSearch index names the service uses (chunks alias, cache, blue-green versions) all
# start with this; fine-grained access control and AOSS data-access rules are scoped to it.
INDEX_PATTERN = "ragline-*"

# Lambda runtime. The layer's compiled wheels (numpy, lxml, pydantic-core, tiktoken) are
# ABI-specific, so the pip target version and the function runtime come from one place.
# 3.14 is the newest Python the installed aws-cdk-lib offers (cdk-nag AwsSolutions-L1 wants
# the newest of the family).
PYTHON_VERSION = "3.14"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
# Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels
# run there, and current releases of tiktoken/numpy/lxml only publish those for aarch64.
LAYER_PIP_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")

# The metrics the alarms and the dashboard read: namespace ``Ragline`` (Powertools'
# POWERTOOLS_METRICS_NAMESPACE), dimension ``service`` = ``ragline-<stage>`` (Powertools adds
# POWERTOOLS_SERVICE_NAME as that dimension to every EMF metric). See infra_cdk/README.md
# "Metrics contract".
METRIC_COST_USD = "CostUsd"  # USD of one model call (Sum = spend); also per tenant: + dimension "tenant"
METRIC_CACHE_HIT_RATE = "CacheHitRate"  # 1 per cache hit, 0 per miss (Average = hit rate)
METRIC_QUERY_LATENCY = "QueryLatencyMs"  # end-to-end latency of one query, milliseconds
DIM_SERVICE = "service"
DIM_TENANT = "tenant"

COGNITO_TENANT_ATTRIBUTE = "tenant"  # appears in ID tokens as ``custom:tenant``
COGNITO_GROUPS: dict[str, str] = {
    "admins": "Tenant administrators: upload and delete documents, read usage",
    "members": "Query documents shared with the tenant or with their groups",
}

# Every route goes to the query function and carries the JWT authorizer.
API_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/query"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/{id}"),
    ("DELETE", "/v1/documents/{id}"),
    ("POST", "/v1/documents/upload-url"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/ops/stats"),
)


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # folder under functions/ and suffix of POWERTOOLS_SERVICE_NAME
    description: str
    memory_mb: int
    timeout: Duration


FUNCTIONS: dict[str, FunctionSpec] = {
    "ingest": FunctionSpec(
        "ingest",
        "Extracts, chunks, embeds and indexes documents delivered by the ingest queue",
        memory_mb=2048,
        timeout=Duration.minutes(5),
    ),
    "query": FunctionSpec(
        "query",
        "HTTP API: hybrid retrieval, semantic cache, generation, documents and usage",
        memory_mb=1024,
        # HTTP API integrations time out at 30 s; the function must answer before that.
        timeout=Duration.seconds(29),
    ),
    "cache": FunctionSpec(
        "cache",
        "Semantic cache maintenance: embeds and (in)validates cached answers",
        memory_mb=512,
        timeout=Duration.minutes(1),
    ),
    "evaluate": FunctionSpec(
        "evaluate",
        "Scheduled RAG quality evaluation, embedding drift, cost and cache-hit metrics",
        memory_mb=1024,
        timeout=Duration.minutes(10),
    ),
}

# Ingest queue: SQS must not redeliver a message while a batch is still being processed.
# AWS recommends a visibility timeout of six times the function timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
INGEST_BATCH_SIZE = 5
INGEST_MAX_BATCHING_WINDOW = Duration.seconds(5)
INGEST_QUEUE_RETENTION = Duration.days(4)
DLQ_RETENTION = Duration.days(14)

NONCURRENT_VERSION_EXPIRATION = Duration.days(30)
ACCESS_LOG_EXPIRATION = Duration.days(365)

# --------------------------------------------------------------------------------------
# Context keys and their defaults (documented in infra_cdk/README.md)
# --------------------------------------------------------------------------------------

CTX_PREFIX = "ragline:"
SKIP_LAYER_BUNDLING_KEY = "ragline:skipLayerBundling"

CONTEXT_DEFAULTS: dict[str, Any] = {
    "ragline:stage": "dev",
    "ragline:embeddingModel": "amazon.titan-embed-text-v2:0",
    "ragline:embeddingDimensions": 1024,
    "ragline:chatModelSmall": "anthropic.claude-3-haiku-20240307-v1:0",
    "ragline:chatModelLarge": "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "ragline:chatModelFallback": "amazon.nova-lite-v1:0",
    "ragline:chatModelFallbackRegion": "",  # "" = the stack's region; else the fallback runs there
    "ragline:rerankModel": "amazon.rerank-v1:0",
    "ragline:cacheThreshold": 0.89,  # the cache's accept threshold (ragline.settings.CacheSettings)
    "ragline:dailyBudgetUsd": 50.0,
    "ragline:tenantIsolation": "shared-index",
    "ragline:tenantIsolationOverrides": "",  # JSON {"tenant": "index-per-tenant", ...}
    "ragline:alarmEmail": "",
    "ragline:searchMode": "domain",
    "ragline:searchInstanceType": "",  # "" = by stage: m7g.medium.search (dev), r7g.large.search (prod)
    "ragline:searchDataNodes": 0,  # 0 = by stage: 1 (dev), 3 (prod)
    "ragline:jwtIssuer": "",
    "ragline:jwtAudience": "",
    "ragline:tenantClaim": "custom:tenant",
    "ragline:groupsClaim": "cognito:groups",
    "ragline:maxReceiveCount": 5,
    "ragline:ingestReservedConcurrency": 5,
    # the ingest function's timeout: a document whose embedding cannot fit it fails with that
    # reason (ragline.settings.ingest_embed_chunks_per_s); the queue's visibility timeout is 6x
    "ragline:ingestTimeoutSeconds": 300,
    "ragline:evaluateSchedule": "rate(1 hour)",
    "ragline:logRetentionDays": 30,
    "ragline:apiRateLimit": 50,
    "ragline:apiBurstLimit": 100,
    "ragline:queueAgeAlarmSeconds": 900,
    "ragline:queryP99AlarmMs": 10000,
    "ragline:skipLayerBundling": False,
    # more RAGLINE_* settings for every function, e.g. budgets and rate limits:
    # {"RAGLINE_COST_HARD_BUDGET_USD": {"acme": 20}, "RAGLINE_GENERATION_RATE_LIMITS": {...}}
    "ragline:functionSettings": "",
}

# RAGLINE_* variables the stack sets itself (from its resources and its own context keys):
# ragline:functionSettings may not set them (tests/infra checks the list against the synth)
STACK_SETTINGS = frozenset({
    "RAGLINE_BACKEND", "RAGLINE_STAGE", "RAGLINE_REGION", "RAGLINE_HOME", "RAGLINE_LAYER_PYTHON",
    "RAGLINE_DOCUMENTS_BUCKET", "RAGLINE_REGISTRY_TABLE", "RAGLINE_LEDGER_TABLE", "RAGLINE_QUERY_LOG_TABLE",
    "RAGLINE_IDEMPOTENCY_TABLE", "RAGLINE_CACHE_TABLE", "RAGLINE_OPENSEARCH_ENDPOINT", "RAGLINE_OPENSEARCH_SERVICE",
    "RAGLINE_JWT_ISSUER", "RAGLINE_JWT_AUDIENCE", "RAGLINE_CLAIM_TENANT", "RAGLINE_CLAIM_GROUPS",
    "RAGLINE_INGEST_MAX_RECEIVE_COUNT", "RAGLINE_INGEST_QUEUE_URL", "RAGLINE_BEDROCK_EMBEDDING_MODEL",
    "RAGLINE_BEDROCK_EMBEDDING_DIMENSIONS",
    "RAGLINE_BEDROCK_CHAT_MODEL_SMALL", "RAGLINE_BEDROCK_CHAT_MODEL_LARGE", "RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK",
    "RAGLINE_BEDROCK_CHAT_MODEL_FALLBACK_REGION", "RAGLINE_BEDROCK_RERANK_MODEL", "RAGLINE_CACHE_THRESHOLD",
    "RAGLINE_DAILY_BUDGET_USD", "RAGLINE_TENANT_ISOLATION", "RAGLINE_TENANT_ISOLATION_OVERRIDES",
})
_SETTING_NAME_RE = re.compile(r"^RAGLINE_[A-Z0-9_]+$")

PRODUCTION_STAGES = frozenset({"prod", "production"})
TENANT_ISOLATION_MODES = ("shared-index", "index-per-tenant")
SEARCH_MODES = ("domain", "serverless")
EMBEDDING_DIMENSIONS = (256, 512, 1024)  # Titan Text Embeddings v2 output sizes (settings accepts these)
_STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SCHEDULE_RE = re.compile(r"^(rate|cron)\(.+\)$")
# CloudWatch Logs accepts these retention periods (in order of aws_logs.RetentionDays).
_VALID_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                         2557, 2922, 3288, 3653)


class ConfigError(ValueError):
    """A context value is missing or invalid; the message names the key."""


def _known_settings() -> dict[str, type]:
    """Every RAGLINE_* variable ``ragline.settings`` reads, with the class that reads it."""
    from pydantic_settings import BaseSettings

    from ragline import settings as rs

    known: dict[str, type] = {}
    for cls in vars(rs).values():
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings) and cls.__module__ == rs.__name__):
            continue
        prefix = cls.model_config.get("env_prefix") or ""
        if not prefix:
            continue  # a tier: set inside its parent's JSON, never as a variable of its own
        for name, info in cls.model_fields.items():
            nested = isinstance(info.annotation, type) and issubclass(info.annotation, BaseSettings)
            if not nested:
                known[f"{prefix}{name}".upper()] = cls
    return known


def _as_function_settings(key: str, value: Any) -> str:
    """``ragline:functionSettings``: a JSON object of extra RAGLINE_* variables (objects and
    arrays given as JSON, encoded), each one ``ragline.settings`` knows and the stack does not
    set itself, validated by the settings classes the functions use, so a typo or a bad value
    fails the synth instead of every Lambda's cold start. Returns the canonical JSON."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{key} is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a JSON object of RAGLINE_* settings")
    env: dict[str, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _SETTING_NAME_RE.match(name):
            raise ConfigError(f"{key}: {name!r} is not a RAGLINE_* variable name")
        if name in STACK_SETTINGS:
            raise ConfigError(f"{key}: {name} is set by the stack itself (use its own ragline:* context key)")
        if isinstance(raw, (dict, list)):
            env[name] = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        elif isinstance(raw, bool):
            env[name] = "true" if raw else "false"
        elif isinstance(raw, (int, float, str)):
            env[name] = str(raw)
        else:
            raise ConfigError(f"{key}: {name} must be a string, number, boolean, object or array")
    known = _known_settings()
    unknown = sorted(set(env) - set(known))
    if unknown:
        import difflib

        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, known, n=1)) else u
                 for u in unknown]
        raise ConfigError(f"{key}: no such setting: {', '.join(hints)}")
    # each class parses its own variables exactly as it will in Lambda (the environment of the
    # synth left out: only these values are read)
    import os

    from pydantic import ValidationError

    saved = {k: v for k, v in os.environ.items() if k.startswith("RAGLINE_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(env)
        for cls in dict.fromkeys(known[name] for name in env):
            try:
                cls()
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                raise ConfigError(f"{key}: invalid value: {problems}") from None
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)
    return json.dumps(env, sort_keys=True)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _as_int(key: str, value: Any, *, minimum: int, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{key} must be an integer, got {value!r}") from exc
    if not minimum <= number <= maximum:
        raise ConfigError(f"{key} must be between {minimum} and {maximum}, got {number}")
    return number


def _as_float(key: str, value: Any, *, minimum: float, maximum: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if not minimum <= number <= maximum:
        raise ConfigError(f"{key} must be between {minimum} and {maximum}, got {number}")
    return number


def _as_model(key: str, value: Any, *, optional: bool = False) -> str | None:
    text = str(value or "").strip()
    if not text:
        if optional:
            return None
        raise ConfigError(f"{key} must name a Bedrock model id")
    if not _MODEL_RE.match(text):
        raise ConfigError(f"{key} is not a valid Bedrock model id: {text!r}")
    return text


_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


def _as_region(key: str, value: Any) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    if not _REGION_RE.match(text):
        raise ConfigError(f"{key} is not an AWS region: {text!r}")
    return text


@dataclass(frozen=True)
class RaglineConfig:
    """Validated deploy-time configuration (one per synth)."""

    stage: str = "dev"
    embedding_model: str = "amazon.titan-embed-text-v2:0"
    embedding_dimensions: int = 1024
    chat_model_small: str = "anthropic.claude-3-haiku-20240307-v1:0"
    chat_model_large: str = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    chat_model_fallback: str | None = "amazon.nova-lite-v1:0"
    chat_model_fallback_region: str | None = None
    rerank_model: str | None = "amazon.rerank-v1:0"
    cache_threshold: float = 0.89
    daily_budget_usd: float = 50.0
    tenant_isolation: Literal["shared-index", "index-per-tenant"] = "shared-index"
    tenant_isolation_overrides: str = ""  # JSON object tenant -> mode, validated below
    alarm_email: str | None = None
    search_mode: Literal["domain", "serverless"] = "domain"
    search_instance_type: str = "m7g.medium.search"
    search_data_nodes: int = 1
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = field(default_factory=tuple)
    tenant_claim: str = "custom:tenant"
    groups_claim: str = "cognito:groups"
    max_receive_count: int = 5
    ingest_reserved_concurrency: int = 5
    ingest_timeout_s: int = 300
    evaluate_schedule: str = "rate(1 hour)"
    log_retention_days: int = 30
    api_rate_limit: int = 50
    api_burst_limit: int = 100
    queue_age_alarm_seconds: int = 900
    query_p99_alarm_ms: int = 10000
    skip_layer_bundling: bool = False
    function_settings: str = ""  # JSON object of extra RAGLINE_* variables, validated (ragline:functionSettings)

    # ----------------------------------------------------------------------------------
    @classmethod
    def from_context(cls, get: Any) -> RaglineConfig:
        """Build from a CDK node (``node.try_get_context``) or a plain mapping of context."""
        if isinstance(get, Mapping):
            mapping = get
            lookup = mapping.get
        else:
            lookup = get.try_get_context

        def ctx(key: str) -> Any:
            value = lookup(key)
            return CONTEXT_DEFAULTS[key] if value is None else value

        stage = str(ctx("ragline:stage")).strip()
        if not _STAGE_RE.match(stage):
            raise ConfigError(
                "ragline:stage must be 1-16 characters of lowercase letters, digits and '-', "
                f"starting with a letter (it becomes part of resource names), got {stage!r}"
            )
        production = stage in PRODUCTION_STAGES

        search_mode = str(ctx("ragline:searchMode")).strip().lower()
        if search_mode not in SEARCH_MODES:
            raise ConfigError(f"ragline:searchMode must be one of {SEARCH_MODES}, got {search_mode!r}")

        isolation = str(ctx("ragline:tenantIsolation")).strip().lower()
        if isolation not in TENANT_ISOLATION_MODES:
            raise ConfigError(
                f"ragline:tenantIsolation must be one of {TENANT_ISOLATION_MODES}, got {isolation!r}"
            )

        overrides = str(ctx("ragline:tenantIsolationOverrides") or "").strip()
        if overrides:
            try:
                parsed = json.loads(overrides)
            except ValueError as exc:
                raise ConfigError(f"ragline:tenantIsolationOverrides is not JSON: {exc}") from None
            if not isinstance(parsed, dict) or any(v not in TENANT_ISOLATION_MODES for v in parsed.values()):
                raise ConfigError(
                    f"ragline:tenantIsolationOverrides must map tenants to one of {TENANT_ISOLATION_MODES}"
                )
            overrides = json.dumps(parsed, sort_keys=True)

        email = str(ctx("ragline:alarmEmail") or "").strip() or None
        if email and not _EMAIL_RE.match(email):
            raise ConfigError(f"ragline:alarmEmail is not an e-mail address: {email!r}")

        issuer = str(ctx("ragline:jwtIssuer") or "").strip() or None
        audience_raw = ctx("ragline:jwtAudience")
        if isinstance(audience_raw, (list, tuple)):
            audience = tuple(str(a).strip() for a in audience_raw if str(a).strip())
        else:
            audience = tuple(a.strip() for a in str(audience_raw or "").split(",") if a.strip())
        if issuer and not issuer.startswith("https://"):
            raise ConfigError(f"ragline:jwtIssuer must be an https:// URL, got {issuer!r}")
        if issuer and not audience:
            raise ConfigError("ragline:jwtIssuer is set, so ragline:jwtAudience must list the audience(s)")
        if audience and not issuer:
            raise ConfigError("ragline:jwtAudience is set without ragline:jwtIssuer")

        schedule = str(ctx("ragline:evaluateSchedule")).strip()
        if not _SCHEDULE_RE.match(schedule):
            raise ConfigError(f"ragline:evaluateSchedule must be rate(...) or cron(...), got {schedule!r}")

        retention = _as_int("ragline:logRetentionDays", ctx("ragline:logRetentionDays"), minimum=1, maximum=3653)
        if retention not in _VALID_RETENTION_DAYS:
            raise ConfigError(f"ragline:logRetentionDays must be one of {_VALID_RETENTION_DAYS}, got {retention}")

        instance_type = str(ctx("ragline:searchInstanceType") or "").strip() or (
            "r7g.large.search" if production else "m7g.medium.search"
        )
        if not instance_type.endswith(".search"):
            raise ConfigError(f"ragline:searchInstanceType must end with .search, got {instance_type!r}")
        data_nodes = _as_int("ragline:searchDataNodes", ctx("ragline:searchDataNodes"), minimum=0, maximum=80)
        data_nodes = data_nodes or (3 if production else 1)
        if production and data_nodes % 3:
            raise ConfigError("ragline:searchDataNodes must be a multiple of 3 for a production stage (3 AZs)")

        dimensions = _as_int(
            "ragline:embeddingDimensions", ctx("ragline:embeddingDimensions"), minimum=1, maximum=8192
        )
        if dimensions not in EMBEDDING_DIMENSIONS:
            raise ConfigError(f"ragline:embeddingDimensions must be one of {EMBEDDING_DIMENSIONS}, got {dimensions}")

        rate = _as_int("ragline:apiRateLimit", ctx("ragline:apiRateLimit"), minimum=1, maximum=10000)
        burst = _as_int("ragline:apiBurstLimit", ctx("ragline:apiBurstLimit"), minimum=1, maximum=5000)

        return cls(
            stage=stage,
            embedding_model=_as_model("ragline:embeddingModel", ctx("ragline:embeddingModel")),
            embedding_dimensions=dimensions,
            chat_model_small=_as_model("ragline:chatModelSmall", ctx("ragline:chatModelSmall")),
            chat_model_large=_as_model("ragline:chatModelLarge", ctx("ragline:chatModelLarge")),
            chat_model_fallback=_as_model(
                "ragline:chatModelFallback", ctx("ragline:chatModelFallback"), optional=True
            ),
            chat_model_fallback_region=_as_region(
                "ragline:chatModelFallbackRegion", ctx("ragline:chatModelFallbackRegion")
            ),
            rerank_model=_as_model("ragline:rerankModel", ctx("ragline:rerankModel"), optional=True),
            cache_threshold=_as_float(
                "ragline:cacheThreshold", ctx("ragline:cacheThreshold"), minimum=0.0, maximum=1.0
            ),
            daily_budget_usd=_as_float(
                "ragline:dailyBudgetUsd", ctx("ragline:dailyBudgetUsd"), minimum=0.01, maximum=1_000_000
            ),
            tenant_isolation=isolation,  # type: ignore[arg-type]
            tenant_isolation_overrides=overrides,
            alarm_email=email,
            search_mode=search_mode,  # type: ignore[arg-type]
            search_instance_type=instance_type,
            search_data_nodes=data_nodes,
            jwt_issuer=issuer,
            jwt_audience=audience,
            tenant_claim=str(ctx("ragline:tenantClaim")).strip(),
            groups_claim=str(ctx("ragline:groupsClaim")).strip(),
            max_receive_count=_as_int(
                "ragline:maxReceiveCount", ctx("ragline:maxReceiveCount"), minimum=1, maximum=1000
            ),
            ingest_reserved_concurrency=_as_int(
                "ragline:ingestReservedConcurrency", ctx("ragline:ingestReservedConcurrency"),
                minimum=0, maximum=1000,
            ),
            ingest_timeout_s=_as_int(
                "ragline:ingestTimeoutSeconds", ctx("ragline:ingestTimeoutSeconds"), minimum=60, maximum=900
            ),
            evaluate_schedule=schedule,
            log_retention_days=retention,
            api_rate_limit=rate,
            api_burst_limit=burst,
            queue_age_alarm_seconds=_as_int(
                "ragline:queueAgeAlarmSeconds", ctx("ragline:queueAgeAlarmSeconds"), minimum=60, maximum=1_209_600
            ),
            query_p99_alarm_ms=_as_int(
                "ragline:queryP99AlarmMs", ctx("ragline:queryP99AlarmMs"), minimum=100, maximum=900_000
            ),
            skip_layer_bundling=_as_bool(SKIP_LAYER_BUNDLING_KEY, ctx(SKIP_LAYER_BUNDLING_KEY)),
            function_settings=_as_function_settings("ragline:functionSettings", ctx("ragline:functionSettings")),
        )

    # ----------------------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.stage in PRODUCTION_STAGES

    @property
    def stack_name(self) -> str:
        return f"Ragline-{self.stage}"

    @property
    def dashboard_name(self) -> str:
        return f"Ragline-{self.stage}"

    @property
    def service_name(self) -> str:
        """POWERTOOLS_SERVICE_NAME of every function: the ``service`` dimension of its metrics."""
        return f"{SERVICE}-{self.stage}"

    @property
    def uses_cognito(self) -> bool:
        return self.jwt_issuer is None

    @property
    def opensearch_service(self) -> str:
        """The SigV4 service name the search adapter signs with (``RAGLINE_OPENSEARCH_SERVICE``)."""
        return "es" if self.search_mode == "domain" else "aoss"

    @property
    def chat_models(self) -> tuple[str, ...]:
        models = [self.chat_model_small, self.chat_model_large]
        if self.chat_model_fallback:
            models.append(self.chat_model_fallback)
        return tuple(dict.fromkeys(models))

    @property
    def log_retention(self) -> logs.RetentionDays:
        finite = [r for r in logs.RetentionDays if r is not logs.RetentionDays.INFINITE]
        return dict(zip(_VALID_RETENTION_DAYS, finite, strict=True))[self.log_retention_days]

    @property
    def ingest_function(self) -> FunctionSpec:
        """The ingest function's spec with the configured timeout (ragline:ingestTimeoutSeconds)."""
        return replace(FUNCTIONS["ingest"], timeout=Duration.seconds(self.ingest_timeout_s))

    @property
    def ingest_visibility_timeout(self) -> Duration:
        return Duration.seconds(self.ingest_timeout_s * VISIBILITY_TIMEOUT_FACTOR)


# --------------------------------------------------------------------------------------
# Bedrock model ARNs
# --------------------------------------------------------------------------------------

# Cross-region inference profiles are addressed by an id with a geography prefix.
_INFERENCE_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "ca.", "jp.", "au.", "global.")


def is_inference_profile(model_id: str) -> bool:
    return model_id.startswith(_INFERENCE_PROFILE_PREFIXES)


def bedrock_model_arns(model_id: str, *, partition: str, region: str, account: str) -> list[str]:
    """ARNs an IAM statement must list to invoke ``model_id``.

    A foundation model is ``arn:<partition>:bedrock:<region>::foundation-model/<id>``. A
    cross-region inference profile (``us.anthropic...``) needs the profile in this account
    and region plus the foundation model in every region the profile may route to.
    """
    if is_inference_profile(model_id):
        base = model_id.split(".", 1)[1]
        return [
            f"arn:{partition}:bedrock:{region}:{account}:inference-profile/{model_id}",
            f"arn:{partition}:bedrock:*::foundation-model/{base}",
        ]
    return [f"arn:{partition}:bedrock:{region}::foundation-model/{model_id}"]
