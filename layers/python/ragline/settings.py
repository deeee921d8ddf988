"""Typed settings, read once from the environment (prefix ``RAGLINE_``) or passed explicitly.

Everything the service needs to know about its environment is here; nothing else reads
``os.environ``. Values that must be set for a backend (bucket, table names, endpoints) are
validated when that backend is selected, so a missing one fails at start-up with its name.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChunkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGLINE_CHUNK_", extra="ignore")

    encoding: str = "cl100k_base"
    # 512 tiktoken tokens: on SciFact train, whole-abstract chunks beat 256 (nDCG@10 0.7426 vs
    # 0.7368; bench/results/tune_fusion.json); the embedding model reads the first ~256 word
    # pieces of a chunk, BM25 and the answerer all of it
    max_tokens: int = Field(default=512, ge=16, le=8192)
    overlap_tokens: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkerSettings:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("chunk overlap_tokens must be smaller than max_tokens")
        return self

    def fingerprint(self) -> str:
        return f"tiktoken:{self.encoding}/max{self.max_tokens}/overlap{self.overlap_tokens}"


class RetrievalSettings(BaseSettings):
    """Hybrid retrieval knobs. Defaults tuned on SciFact's *train* split (bench/README.md)."""

    model_config = SettingsConfigDict(env_prefix="RAGLINE_RETRIEVAL_", extra="ignore")

    top_k: int = Field(default=5, ge=1, le=50)
    # per leg; 200 tuned on SciFact train (0.7430 vs 0.7414 at 100, same latency)
    candidates: int = Field(default=200, ge=10, le=1000)
    # weight of the dense leg in the fused score; the lexical leg gets 1 - dense_weight
    dense_weight: float = Field(default=0.6, ge=0.0, le=1.0)
    fusion: Literal["minmax", "zscore", "rrf"] = "zscore"
    rrf_k: int = 60
    # five 512-token chunks fit (the small tier; the large one gets twice this)
    context_token_budget: int = Field(default=2600, ge=100)


class VariantSettings(BaseModel):
    """One arm of an experiment: its traffic share and what it changes (unset = unchanged)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    share: float = Field(gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, le=50)
    dense_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    rerank: bool | None = None
    model_tier: Literal["small", "large"] | None = None
    prompt: str | None = None  # a name in ragline.experiments.SYSTEM_PROMPTS
    index_version: str | None = None  # a local index version name / OpenSearch index behind the alias

    @model_validator(mode="after")
    def _known_prompt(self) -> VariantSettings:
        from .experiments import SYSTEM_PROMPTS

        if self.prompt is not None and self.prompt not in SYSTEM_PROMPTS:
            raise ValueError(f"variant {self.name}: unknown prompt {self.prompt!r}; known: {', '.join(sorted(SYSTEM_PROMPTS))}")
        return self


class ExperimentSettings(BaseModel):
    """A named A/B experiment (``RAGLINE_EXPERIMENTS`` is a JSON list of these)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    enabled: bool = True
    variants: list[VariantSettings] = Field(min_length=2)

    @model_validator(mode="after")
    def _shares(self) -> ExperimentSettings:
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"experiment {self.name}: variant shares add up to {total:g}, not 1")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError(f"experiment {self.name}: variant names must be unique")
        return self


class CacheSettings(BaseSettings):
    """The semantic cache's decision policy (bench/cache_policy.py measures it).

    ``threshold`` is the cosine at which a verified cached question is accepted outright;
    between ``candidate_threshold`` and ``threshold`` a candidate must also share enough content
    words and (when retrieval runs) passages. Numbers, negations and named entities must agree
    at every similarity. Per-tenant overrides take precedence over the defaults."""

    model_config = SettingsConfigDict(env_prefix="RAGLINE_CACHE_", extra="ignore")

    enabled: bool = True
    # tuned on STS-B train (bench/cache_policy.py): plain cosine 0.92 is the baseline it beats
    threshold: float = Field(default=0.89, ge=0.5, le=1.0)
    candidate_threshold: float = Field(default=0.84, ge=0.3, le=1.0)
    min_content_overlap: float = Field(default=0.65, ge=0.0, le=1.0)
    min_passage_overlap: float = Field(default=0.6, ge=0.0, le=1.0)
    verify: bool = True  # False: plain cosine >= threshold (the baseline the bench compares with)
    # the same question again (up to case, spacing and final punctuation) is found by its key
    # before the query is embedded: no embedding call, ~1 ms instead of ~12 ms locally
    exact_match: bool = True
    ttl_s: float = Field(default=86400.0, gt=0)
    tenant_thresholds: dict[str, float] = Field(default_factory=dict)
    tenant_ttl_s: dict[str, float] = Field(default_factory=dict)
    # per document type (content type such as "text/html", or a file extension such as ".md"):
    # an answer citing a document of that type lives at most this long
    doctype_ttl_s: dict[str, float] = Field(default_factory=dict)

    def threshold_for(self, tenant: str) -> float:
        return float(self.tenant_thresholds.get(tenant, self.threshold))

    def candidate_for(self, tenant: str) -> float:
        """Where the tenant's verified band begins. A tenant stricter than the default gets no
        band at all (plain cosine at its own threshold: one asking for 0.999 never gets a
        verified hit below it); a looser one keeps the default band's floor (the verification's
        thresholds were tuned for it)."""
        accept = self.threshold_for(tenant)
        return accept if accept > self.threshold else min(accept, self.candidate_threshold)

    def ttl_for(self, tenant: str) -> float:
        return float(self.tenant_ttl_s.get(tenant, self.ttl_s))


class TierSettings(BaseSettings):
    """One model tier: which model, how much context it gets, how long its answer may be."""

    model_config = SettingsConfigDict(extra="ignore")

    model: str
    context_token_budget: int = Field(default=1500, ge=100)
    max_passages: int = Field(default=5, ge=1, le=50)
    max_output_tokens: int = Field(default=512, ge=16)


class GenerationSettings(BaseSettings):
    """Routing, failover, rate limits and budgets for model calls (ragline.generation.service)."""

    model_config = SettingsConfigDict(env_prefix="RAGLINE_GENERATION_", extra="ignore")

    # routing: the small tier answers simple factual questions, the large one complex questions
    small: TierSettings | None = None  # None: taken from the backend's model settings
    large: TierSettings | None = None
    route_long_question_tokens: int = Field(default=28, ge=5)
    timeout_s: float = Field(default=20.0, gt=0)  # per request, all attempts and the fallback included
    # when every model fails: "error" -> 503 naming the models; "passages" -> the retrieved
    # passages, labelled as such
    unavailable_mode: Literal["error", "passages"] = "error"
    # per-model token buckets: model id -> [requests per second, burst]
    rate_limits: dict[str, tuple[float, int]] = Field(default_factory=dict)
    rate_limit_max_wait_s: float = Field(default=2.0, ge=0)

    @field_validator("rate_limits")
    @classmethod
    def _positive_buckets(cls, value: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        for model, (rate, burst) in value.items():
            if rate <= 0 or burst < 1:
                raise ValueError(f"{model}: a token bucket needs requests per second > 0 and burst >= 1")
        return value


class CostSettings(BaseSettings):
    """Prices and budgets. The price table is a versioned JSON file shipped in the package
    (``ragline/data/prices/<name>.json``) or a path to one."""

    model_config = SettingsConfigDict(env_prefix="RAGLINE_COST_", extra="ignore")

    price_table: str = "2024-11"
    # per tenant, USD per UTC day; "*" applies to tenants without their own entry
    soft_budget_usd: dict[str, float] = Field(default_factory=dict)
    hard_budget_usd: dict[str, float] = Field(default_factory=dict)
    # at the hard limit: refuse with 429, or answer with the cheaper tier (then refuse when even
    # that one would be over twice the hard limit)
    hard_limit_action: Literal["refuse", "downgrade"] = "refuse"
    # a request's budget reservation is held at most this long; past it the reservation is a
    # dead request's (a crash, a killed process) and the next request that does not fit takes it
    # back. Longer than any request can live (Lambda's limit is 15 minutes)
    reservation_lease_s: float = Field(default=960.0, gt=0)

    def budget(self, table: dict[str, float], tenant: str) -> float | None:
        value = table.get(tenant, table.get("*"))
        return float(value) if value is not None else None


class IndexBuildSettings(BaseSettings):
    """Blue-green index builds on AWS (ragline.operations.index_versions_aws). Batch inference
    is used when a build embeds more than ``batch_min_chunks`` chunks and both the role and the
    S3 prefix are set (the CDK stack outputs IndexBatchRoleArn and IndexBatchS3Uri)."""

    model_config = SettingsConfigDict(env_prefix="RAGLINE_INDEX_", extra="ignore")

    batch_min_chunks: int = Field(default=10000, ge=1)
    # Bedrock refuses a batch job with fewer records than its quota "Minimum number of records
    # per batch inference job" (100 unless raised or lowered for the account); a build with
    # fewer distinct texts stays on demand
    batch_min_records: int = Field(default=100, ge=1)
    batch_role_arn: str | None = None  # the service role Bedrock assumes to read/write the prefix
    batch_s3_uri: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    batch_deadline_s: float = Field(default=24 * 3600.0, gt=0)  # give up waiting (the job keeps its ARN)
    batch_poll_s: float = Field(default=60.0, gt=0)
    snapshot_repository: str | None = None  # a registered OpenSearch snapshot repository (S3)

    @property
    def batch_configured(self) -> bool:
        return bool(self.batch_role_arn and self.batch_s3_uri)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGLINE_", extra="ignore")

    backend: Literal["local", "aws"] = "local"
    stage: str = "dev"
    home: Path = Path(".ragline")

    # identity
    jwt_secret: str | None = None  # local only; generated under home when absent
    jwt_issuer: str = "ragline-local"
    jwt_audience: str = "ragline"
    claim_tenant: str = "custom:tenant"
    claim_user: str = "sub"
    claim_groups: str = "cognito:groups"
    claim_scope: str = "scope"
    admin_scope: str = "ragline/admin"
    # groups whose members administer their own tenant: upload and delete documents, read usage
    # and the operating figures (the Cognito group "admins" of infra_cdk); everyone else may query
    admin_groups: list[str] = Field(default_factory=lambda: ["admins"])

    # models
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_dimensions: int = 384
    embedding_batch_size: int = 64

    # the CDK app passes these (RAGLINE_CACHE_THRESHOLD sets cache.threshold)
    daily_budget_usd: float = Field(default=0.0, ge=0.0, description="0 = no budget")
    tenant_isolation: Literal["shared-index", "index-per-tenant"] = "shared-index"
    # per tenant, overriding the default above, e.g.
    # RAGLINE_TENANT_ISOLATION_OVERRIDES='{"bank": "index-per-tenant"}' (ragline.adapters.local.tenant_index)
    tenant_isolation_overrides: dict[str, Literal["shared-index", "index-per-tenant"]] = Field(default_factory=dict)

    # limits
    max_question_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pages_per_document: int = 2000
    max_chunks_per_document: int = 20000
    # a deleted document's registry record (a tombstone: it orders late S3 events) is kept this
    # long, then removed (DynamoDB TTL; locally when another tombstone of the tenant is written).
    # It must outlive any event still in flight: SQS keeps messages (dead letters included,
    # counted from their first enqueue) at most 14 days
    tombstone_days: int = Field(default=30, ge=15)
    # ingestion inside a time budget (the ingest Lambda's timeout): before a document is claimed
    # and embedded, its chunks are priced in seconds at the embedding rate this process has
    # measured (this prior until it has one) plus a reserve for staging and publishing. A
    # document that cannot fit even a whole invocation fails with that reason; one that does
    # not fit what is left of this invocation is put back on the queue for a fresh one
    ingest_embed_chunks_per_s: float = Field(default=50.0, gt=0.0)
    ingest_time_reserve_s: float = Field(default=10.0, ge=0.0)

    # PII at ingestion (ragline.ingest.pii): a policy per tenant, e.g.
    # RAGLINE_PII_POLICY='{"acme": "redact"}'; tenants not listed get the default
    pii_default_policy: Literal["redact", "tag", "allow"] = "allow"
    pii_policy: dict[str, Literal["redact", "tag", "allow"]] = Field(default_factory=dict)
    pii_restricted_group: str = Field(default="pii-readers", min_length=1, max_length=128)
    pii_min_score: float = Field(default=0.4, ge=0.0, le=1.0)
    comprehend_language: Literal["en", "es"] = "en"

    # AWS (validated when backend == "aws")
    region: str | None = None
    documents_bucket: str | None = None
    registry_table: str | None = None
    ledger_table: str | None = None
    query_log_table: str | None = None
    idempotency_table: str | None = None
    cache_table: str | None = None  # semantic cache on DynamoDB; unset: no cache on AWS
    opensearch_endpoint: str | None = None
    opensearch_service: Literal["es", "aoss"] = "es"
    # how many hits each hybrid sub-query keeps per shard before the scores are normalised and
    # combined (the hybrid query's pagination_depth, OpenSearch >= 2.19, the version the stack
    # deploys): None = the request's candidate depth on a domain, off on Serverless (unverified
    # there); 0 = off (each leg then keeps only the top_k hits it returns)
    opensearch_hybrid_depth: int | None = Field(default=None, ge=0, le=10000)
    opensearch_index_alias: str = "ragline-chunks"
    bedrock_embedding_model: str = "amazon.titan-embed-text-v2:0"
    bedrock_embedding_dimensions: Literal[256, 512, 1024] = 1024
    bedrock_chat_model_small: str = "anthropic.claude-3-haiku-20240307-v1:0"
    bedrock_chat_model_large: str = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    bedrock_chat_model_fallback: str | None = "amazon.nova-lite-v1:0"
    # the fallback's region (None: the stack's region): the same model in another region is a
    # fallback too, for a regional outage or throttling
    bedrock_chat_model_fallback_region: str | None = None
    bedrock_rerank_model: str | None = "amazon.rerank-v1:0"

    chunker: ChunkerSettings = Field(default_factory=ChunkerSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    costs: CostSettings = Field(default_factory=CostSettings)
    index_build: IndexBuildSettings = Field(default_factory=IndexBuildSettings)

    # operations (issue 7): evaluation sample, judge repeats, A/B experiments, drift thresholds
    eval_sample_rate: float = Field(default=0.15, ge=0.0, le=1.0)
    judge_repeats: int = Field(default=3, ge=1, le=10)
    judge_model: str | None = None  # Bedrock model for the LLM judge (default: the large chat model)
    experiments: list[ExperimentSettings] = Field(default_factory=list)
    drift_psi_alarm: float = Field(default=0.2, gt=0.0)
    drift_ks_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _aws_requires(self) -> Settings:
        if self.backend == "aws":
            required = ["region", "documents_bucket", "registry_table", "ledger_table", "query_log_table", "opensearch_endpoint"]
            missing = [f"RAGLINE_{n.upper()}" for n in required if not getattr(self, n)]
            if missing:
                raise ValueError(f"backend=aws needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _tiers_fit_retrieval(self) -> Settings:
        # a tier packs from the passages retrieval returns: more than top_k can never be reached
        for name in ("small", "large"):
            tier = getattr(self.generation, name)
            if tier is not None and tier.max_passages > self.retrieval.top_k:
                raise ValueError(
                    f"generation.{name}.max_passages is {tier.max_passages} but retrieval.top_k is "
                    f"{self.retrieval.top_k}: a tier packs only passages retrieval returns; raise retrieval.top_k "
                    f"(RAGLINE_RETRIEVAL_TOP_K) or lower max_passages")
        return self

    def isolation_for(self, tenant: str) -> str:
        """The isolation mode of one tenant: its override, else the default."""
        return self.tenant_isolation_overrides.get(tenant, self.tenant_isolation)

    @property
    def uses_tenant_indexes(self) -> bool:
        """Whether any tenant may get an index of its own (then the index port routes by tenant)."""
        return self.tenant_isolation == "index-per-tenant" or "index-per-tenant" in self.tenant_isolation_overrides.values()

    @property
    def home_dir(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (once per Lambda container)."""
    return Settings()
