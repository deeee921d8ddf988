"""DynamoDB tables: document registry, query log, cost ledger, idempotency records.

Key shapes follow ragline/adapters/aws/dynamodb.py (string keys ``pk``/``sk``) and
aws-lambda-powertools' idempotency persistence (``id``, TTL ``expiration``). All tables are
on-demand, with point-in-time recovery, encrypted with the AWS managed key, TTL where records
expire. The semantic cache has a table of its own (ragline/adapters/aws/dynamodb_cache.py:
entries per tenant and ACL scope, ranked in the function; per-document references for
invalidation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from . import config as cfg

S = dynamodb.AttributeType.STRING


@dataclass(frozen=True)
class TableSchema:
    partition_key: str
    sort_key: str | None = None
    ttl_attribute: str | None = None
    # global secondary index name -> (partition key, sort key), all string keys, projecting ALL
    indexes: dict[str, tuple[str, str]] = field(default_factory=dict)


QUERY_LOG_BY_TENANT = "by_tenant_time"
QUERY_LOG_BY_DAY = "by_day_time"

TABLE_SCHEMAS: dict[str, TableSchema] = {
    # pk = tenant, sk = doc_id; a deleted document's tombstone expires (RAGLINE_TOMBSTONE_DAYS)
    "Registry": TableSchema("pk", "sk", "expires_at"),
    # pk = tenant, sk = query_id; newest-first reads per tenant and per day
    "QueryLog": TableSchema(
        "pk", "sk", "expires_at",
        indexes={QUERY_LOG_BY_TENANT: ("pk", "logged_at"), QUERY_LOG_BY_DAY: ("log_day", "logged_at")},
    ),
    # pk = tenant#<tenant>, sk = req#... (per request, expiring) or day#... (daily aggregates)
    "Ledger": TableSchema("pk", "sk", "expires_at"),
    "Idempotency": TableSchema("id", None, "expiration"),
    # pk = cache#<tenant> (entries) or cachedoc#<tenant>#<doc_id> (references for invalidation)
    "Cache": TableSchema("pk", "sk", "expires_at"),
}


class DataTables(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig) -> None:
        super().__init__(scope, construct_id)
        tables: dict[str, dynamodb.Table] = {}
        for name, schema in TABLE_SCHEMAS.items():
            table = dynamodb.Table(
                self,
                name,
                partition_key=dynamodb.Attribute(name=schema.partition_key, type=S),
                sort_key=dynamodb.Attribute(name=schema.sort_key, type=S) if schema.sort_key else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                time_to_live_attribute=schema.ttl_attribute,
                deletion_protection=config.is_production,
                removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
            )
            for index, (pk, sk) in schema.indexes.items():
                table.add_global_secondary_index(
                    index_name=index,
                    partition_key=dynamodb.Attribute(name=pk, type=S),
                    sort_key=dynamodb.Attribute(name=sk, type=S),
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            tables[name] = table
        self.registry = tables["Registry"]
        self.query_log = tables["QueryLog"]
        self.ledger = tables["Ledger"]
        self.idempotency = tables["Idempotency"]
        self.cache = tables["Cache"]
