"""The search index: an OpenSearch Service domain or an OpenSearch Serverless collection.

Chosen by ``ragline:searchMode``. Both expose ``endpoint`` (an ``https://`` URL, for
``RAGLINE_OPENSEARCH_ENDPOINT``) and ``service`` (``es`` or ``aoss``, the SigV4 service
name, for ``RAGLINE_OPENSEARCH_SERVICE``), and grant two kinds of callers:

* indexers (ingest, cache): create/update/delete indices, aliases and pipelines, write documents;
* searchers (query): read documents and write semantic-cache entries.

Both are scoped to the index pattern ``ragline-*``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Aws, CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchserverless as aoss
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from . import config as cfg
from . import nag
from .functions import RaglineFunction

ES_HTTP_ACTIONS = ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete",
                   "es:ESHttpPatch"]
INDEXER_ROLE = "ragline_indexer"
SEARCHER_ROLE = "ragline_searcher"

# Fine-grained access control roles (OpenSearch security plugin), created by the custom resource.
SECURITY_ROLES: dict[str, dict] = {
    INDEXER_ROLE: {
        "cluster_permissions": [
            "cluster_composite_ops",
            "cluster_monitor",
            "cluster:admin/search/pipeline/*",
            "cluster:admin/ingest/pipeline/*",
            "indices:admin/template/*",
            "indices:admin/index_template/*",
        ],
        "index_permissions": [{"index_patterns": [cfg.INDEX_PATTERN], "allowed_actions": ["indices_all"]}],
    },
    SEARCHER_ROLE: {
        "cluster_permissions": ["cluster_composite_ops", "cluster:admin/search/pipeline/get"],
        "index_permissions": [
            {
                "index_patterns": [cfg.INDEX_PATTERN],
                "allowed_actions": ["crud", "indices:admin/aliases/get", "indices:admin/mappings/get"],
            }
        ],
    },
}

AOSS_INDEXER_PERMISSIONS = {
    "index": ["aoss:CreateIndex", "aoss:DeleteIndex", "aoss:UpdateIndex", "aoss:DescribeIndex",
              "aoss:ReadDocument", "aoss:WriteDocument"],
    "collection": ["aoss:DescribeCollectionItems", "aoss:CreateCollectionItems", "aoss:UpdateCollectionItems"],
}
AOSS_SEARCHER_PERMISSIONS = {
    "index": ["aoss:DescribeIndex", "aoss:ReadDocument", "aoss:WriteDocument"],
    "collection": ["aoss:DescribeCollectionItems"],
}

PUBLIC_ENDPOINT_REASON = (
    "The functions run outside a VPC (no NAT/VPC endpoints to pay for or manage), so the "
    "domain has a public HTTPS endpoint; every request must be SigV4-signed by one of the "
    "function roles named in the domain access policy and passes fine-grained access control."
)


class SearchDomain(Construct):
    """OpenSearch Service domain with fine-grained access control mapped to the function roles."""

    service = "es"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: cfg.RaglineConfig,
        indexers: Sequence[RaglineFunction],
        searchers: Sequence[RaglineFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY
        retention = config.log_retention
        self.domain_name = f"{cfg.SERVICE}-{config.stage}"
        self.domain_arn = f"arn:{Aws.PARTITION}:es:{Aws.REGION}:{Aws.ACCOUNT_ID}:domain/{self.domain_name}"

        # -- slow logs and application logs --------------------------------------------
        log_groups = {
            name: logs.LogGroup(self, name, retention=retention, removal_policy=removal)
            for name in ("AppLogs", "SlowSearchLogs", "SlowIndexLogs")
        }
        log_delivery = logs.ResourcePolicy(
            self,
            "LogDeliveryPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in log_groups.values()],
                    conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                )
            ],
        )

        # -- the master user: a custom resource that defines roles and their mappings -----
        admin = _SecurityAdmin(self, "SecurityAdmin", config=config, domain_arn=self.domain_arn)

        if config.is_production:
            capacity = opensearch.CapacityConfig(
                data_node_instance_type=config.search_instance_type,
                data_nodes=config.search_data_nodes,
                master_node_instance_type="m7g.large.search",
                master_nodes=3,
                multi_az_with_standby_enabled=True,
            )
            zone_awareness = opensearch.ZoneAwarenessConfig(enabled=True, availability_zone_count=3)
            volume_gib = 100
        else:
            capacity = opensearch.CapacityConfig(
                data_node_instance_type=config.search_instance_type,
                data_nodes=config.search_data_nodes,
                multi_az_with_standby_enabled=False,
            )
            zone_awareness = opensearch.ZoneAwarenessConfig(enabled=False)
            volume_gib = 20

        self.domain = opensearch.Domain(
            self,
            "Domain",
            domain_name=self.domain_name,
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            capacity=capacity,
            zone_awareness=zone_awareness,
            ebs=opensearch.EbsOptions(volume_size=volume_gib, volume_type=ec2.EbsDeviceVolumeType.GP3),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(master_user_arn=admin.role.role_arn),
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=log_groups["AppLogs"],
                slow_search_log_enabled=True,
                slow_search_log_group=log_groups["SlowSearchLogs"],
                slow_index_log_enabled=True,
                slow_index_log_group=log_groups["SlowIndexLogs"],
            ),
            suppress_logs_resource_policy=True,  # LogDeliveryPolicy above, no custom resource
            enable_auto_software_update=True,
            off_peak_window_enabled=True,
            removal_policy=removal,
        )
        self.domain.node.add_dependency(log_delivery)

        # Resource policy: only these roles may send (signed) HTTP requests at all.
        principals = [fn.role.role_arn for fn in (*indexers, *searchers)] + [admin.role.role_arn]
        cfn_domain: opensearch.CfnDomain = self.domain.node.default_child  # type: ignore[assignment]
        cfn_domain.access_policies = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": principals},
                    "Action": ES_HTTP_ACTIONS,
                    "Resource": f"{self.domain_arn}/*",
                }
            ],
        }

        self.endpoint = f"https://{self.domain.domain_endpoint}"
        self.security_config = CustomResource(
            self,
            "SecurityConfig",
            service_token=admin.function.function_arn,
            resource_type="Custom::RaglineOpenSearchSecurity",
            properties={
                "Endpoint": self.endpoint,
                "Region": Aws.REGION,
                "Roles": SECURITY_ROLES,
                "RoleMappings": {
                    INDEXER_ROLE: [fn.role.role_arn for fn in indexers],
                    SEARCHER_ROLE: [fn.role.role_arn for fn in searchers],
                },
            },
        )
        self.security_config.node.add_dependency(admin)

        # Identity side of the same grant.
        for fn in (*indexers, *searchers):
            fn.allow(
                "SearchDomainHttp",
                ES_HTTP_ACTIONS,
                [f"{self.domain_arn}/*"],
                wildcard_reason=(
                    "OpenSearch HTTP permissions are granted on the domain's paths (domain/<name>/*); "
                    "which indices a role may touch is enforced by fine-grained access control "
                    f"({INDEXER_ROLE}/{SEARCHER_ROLE} on {cfg.INDEX_PATTERN})."
                ),
            )

        nag.acknowledge(self.domain, "AwsSolutions-OS1", PUBLIC_ENDPOINT_REASON)
        nag.acknowledge(
            self.domain,
            "AwsSolutions-OS3",
            "Callers are Lambda functions with changing public IPs, so an IP allowlist cannot apply; "
            "access is restricted by IAM principals in the access policy and fine-grained access control.",
        )
        if not config.is_production:
            nag.acknowledge(
                self.domain,
                "AwsSolutions-OS4",
                f"Non-production stage '{config.stage}': a single data node for cost; production "
                "stages get 3 dedicated master nodes.",
            )
            nag.acknowledge(
                self.domain,
                "AwsSolutions-OS7",
                f"Non-production stage '{config.stage}': a single data node cannot span zones; "
                "production stages get 3-AZ zone awareness with standby.",
            )


class _SecurityAdmin(Construct):
    """The domain's master user: a small function that configures FGAC roles once."""

    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig, domain_arn: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Ragline ({config.stage}): OpenSearch master user, configures security roles",
        )
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        security_api = iam.PolicyStatement(
            sid="ConfigureSecurityPlugin",
            actions=["es:ESHttpGet", "es:ESHttpPut"],
            resources=[f"{domain_arn}/_plugins/_security/api/*"],
        )
        policy = iam.Policy(self, "SecurityApiPolicy", statements=[security_api], roles=[self.role])
        nag.acknowledge_wildcards(
            policy,
            [security_api],
            "The master user only needs the security plugin's REST API (roles and rolesmapping), "
            "whose paths sit under _plugins/_security/api/ of this one domain.",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"Ragline ({config.stage}): defines OpenSearch FGAC roles for the function roles",
            runtime=cfg.LAMBDA_RUNTIME,
            architecture=cfg.LAMBDA_ARCHITECTURE,
            handler="index.handler",
            code=lambda_.Code.from_asset(str(cfg.OPENSEARCH_SECURITY_HANDLER_DIR), exclude=["__pycache__"]),
            role=self.role,
            log_group=self.log_group,
            timeout=Duration.minutes(10),
            memory_size=256,
        )
        self.function.node.add_dependency(policy)


class SearchCollection(Construct):
    """OpenSearch Serverless VECTORSEARCH collection with its encryption, network and data policies."""

    service = "aoss"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: cfg.RaglineConfig,
        indexers: Sequence[RaglineFunction],
        searchers: Sequence[RaglineFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        name = f"{cfg.SERVICE}-{config.stage}"
        collection_resource = [f"collection/{name}"]

        encryption = aoss.CfnSecurityPolicy(
            self,
            "EncryptionPolicy",
            name=f"{name}-enc",
            type="encryption",
            description="Ragline: encrypt the collection at rest with an AWS owned key",
            policy=json.dumps({"Rules": [{"ResourceType": "collection", "Resource": collection_resource}],
                               "AWSOwnedKey": True}),
        )
        network = aoss.CfnSecurityPolicy(
            self,
            "NetworkPolicy",
            name=f"{name}-net",
            type="network",
            description="Ragline: collection endpoint reachable over HTTPS with SigV4 (no dashboards)",
            policy=json.dumps([{"Rules": [{"ResourceType": "collection", "Resource": collection_resource}],
                                "AllowFromPublic": True}]),
        )
        self.collection = aoss.CfnCollection(
            self,
            "Collection",
            name=name,
            type="VECTORSEARCH",
            description=f"Ragline ({config.stage}) chunks and semantic cache",
            standby_replicas="ENABLED" if config.is_production else "DISABLED",
        )
        self.collection.node.add_dependency(encryption, network)
        self.collection.apply_removal_policy(RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY)

        def rules(permissions: dict[str, list[str]]) -> list[dict]:
            return [
                {"ResourceType": "index", "Resource": [f"index/{name}/{cfg.INDEX_PATTERN}"],
                 "Permission": permissions["index"]},
                {"ResourceType": "collection", "Resource": collection_resource,
                 "Permission": permissions["collection"]},
            ]

        data_policy = [
            {"Description": "ingest and cache: manage indices and write",
             "Rules": rules(AOSS_INDEXER_PERMISSIONS), "Principal": [fn.role.role_arn for fn in indexers]},
            {"Description": "query: read chunks, write cache entries",
             "Rules": rules(AOSS_SEARCHER_PERMISSIONS), "Principal": [fn.role.role_arn for fn in searchers]},
        ]
        self.access_policy = aoss.CfnAccessPolicy(
            self,
            "DataAccessPolicy",
            name=f"{name}-access",
            type="data",
            description="Ragline: data access for the function roles",
            policy=Stack.of(self).to_json_string(data_policy),
        )
        self.endpoint = self.collection.attr_collection_endpoint
        for fn in (*indexers, *searchers):
            fn.allow("SearchCollectionApi", ["aoss:APIAccessAll"], [self.collection.attr_arn])


def create_search(
    scope: Construct,
    construct_id: str,
    *,
    config: cfg.RaglineConfig,
    indexers: Sequence[RaglineFunction],
    searchers: Sequence[RaglineFunction],
) -> SearchDomain | SearchCollection:
    kind = SearchDomain if config.search_mode == "domain" else SearchCollection
    return kind(scope, construct_id, config=config, indexers=indexers, searchers=searchers)
