"""The HTTP API: JWT-authorized routes to the query function.

Identity comes from a Cognito user pool created here (custom attribute ``tenant``, groups)
or from an existing OIDC issuer given in context. The tenant is read from the validated
token's claims by the function, never from the request body.
"""

from __future__ import annotations

import json

import jsii
from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from . import config as cfg
from . import nag
from .functions import RaglineFunction
from .storage import DocumentStorage
from .tables import QUERY_LOG_BY_TENANT, DataTables

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "method": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
    "sub": "$context.authorizer.claims.sub",
}


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)
        self._format = apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT))

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigw.AccessLogFormat:
        return self._format


class Identity(Construct):
    """Cognito user pool and app client whose ID tokens carry ``custom:tenant`` and groups."""

    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"{cfg.SERVICE}-{config.stage}",
            # Users are created by an administrator, who sets their tenant: a self-service
            # sign-up could choose its own tenant.
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            custom_attributes={
                cfg.COGNITO_TENANT_ATTRIBUTE: cognito.StringAttribute(min_len=1, max_len=64, mutable=False),
            },
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
            deletion_protection=config.is_production,
            removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
        )
        nag.acknowledge(
            self.user_pool,
            "AwsSolutions-COG2",
            "MFA is offered (TOTP, optional) rather than required: the pool authenticates both people "
            "and service accounts of integrating applications, which enforce their own MFA policy.",
        )
        nag.acknowledge(
            self.user_pool,
            "AwsSolutions-COG8",
            "Essentials tier: the Plus tier's threat protection is billed per monthly active user and "
            "is a per-deployment decision; sign-up is closed and passwords are strong.",
        )
        self.client = self.user_pool.add_client(
            "AppClient",
            user_pool_client_name=f"{cfg.SERVICE}-{config.stage}-app",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, admin_user_password=True),
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True, email_verified=True)
            .with_custom_attributes(cfg.COGNITO_TENANT_ATTRIBUTE),
            # The tenant is never writable by the user.
            write_attributes=cognito.ClientAttributes().with_standard_attributes(email=True),
        )
        for group, description in cfg.COGNITO_GROUPS.items():
            cognito.CfnUserPoolGroup(
                self, f"Group{group.title()}", user_pool_id=self.user_pool.user_pool_id,
                group_name=group, description=description,
            )
        self.issuer = f"https://cognito-idp.{Aws.REGION}.{Aws.URL_SUFFIX}/{self.user_pool.user_pool_id}"
        self.audience = [self.client.user_pool_client_id]


class QueryApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: cfg.RaglineConfig,
        layer: lambda_.ILayerVersion,
        storage: DocumentStorage,
        tables: DataTables,
        model_environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY

        self.identity: Identity | None = None
        if config.uses_cognito:
            self.identity = Identity(self, "Identity", config=config)
            issuer, audience = self.identity.issuer, self.identity.audience
        else:
            assert config.jwt_issuer is not None
            issuer, audience = config.jwt_issuer, list(config.jwt_audience)

        self.function = RaglineFunction(
            self,
            "QueryFunction",
            spec=cfg.FUNCTIONS["query"],
            config=config,
            layer=layer,
            environment={
                "RAGLINE_DOCUMENTS_BUCKET": storage.bucket.bucket_name,
                "RAGLINE_REGISTRY_TABLE": tables.registry.table_name,
                "RAGLINE_QUERY_LOG_TABLE": tables.query_log.table_name,
                "RAGLINE_LEDGER_TABLE": tables.ledger.table_name,
                "RAGLINE_CACHE_TABLE": tables.cache.table_name,
                "RAGLINE_JWT_ISSUER": issuer,
                "RAGLINE_JWT_AUDIENCE": audience[0] if len(audience) == 1 else ",".join(audience),
                "RAGLINE_CLAIM_TENANT": config.tenant_claim,
                "RAGLINE_CLAIM_GROUPS": config.groups_claim,
                **model_environment,
            },
        )
        fn = self.function
        # Presigned upload URLs are signed with this role: it needs PutObject (and the key to
        # encrypt with); DELETE /v1/documents/{id} deletes the object, and the resulting
        # ObjectRemoved event makes the ingest function drop its chunks.
        fn.allow(
            "WriteDocuments",
            ["s3:PutObject", "s3:DeleteObject"],
            [storage.objects_arn("*")],
            wildcard_reason=(
                "Upload URLs and deletions address objects under tenants/<tenant>/...; the tenant "
                "comes from the caller's token at run time, so the grant is the tenants/* key pattern."
            ),
        )
        fn.allow("EncryptDocuments", ["kms:GenerateDataKey", "kms:Decrypt"], [storage.key.key_arn])
        fn.allow_table("RegistryReadWrite", tables.registry, write=True)
        fn.allow_table("QueryLogReadWrite", tables.query_log, write=True, indexes=[QUERY_LOG_BY_TENANT])
        fn.allow_table("LedgerReadWrite", tables.ledger, write=True)
        fn.allow_table("CacheReadWrite", tables.cache, write=True)
        fn.allow_bedrock_models(
            "InvokeQueryModels", [*config.chat_models, config.embedding_model, *filter(None, [config.rerank_model])],
            elsewhere=[(config.chat_model_fallback, config.chat_model_fallback_region)]
            if config.chat_model_fallback and config.chat_model_fallback_region else (),
        )
        if config.rerank_model:
            # bedrock:Rerank has no resource-level permissions (Resource must be "*"); which
            # model it may use is still restricted by bedrock:InvokeModel above.
            fn.allow(
                "RerankDocuments",
                ["bedrock:Rerank"],
                ["*"],
                wildcard_reason=(
                    "bedrock:Rerank (agent-runtime Rerank API) supports no resource-level permissions; "
                    "the reranking model is still limited by bedrock:InvokeModel on its model ARN."
                ),
            )

        # -- HTTP API -----------------------------------------------------------------
        authorizer = authorizers.HttpJwtAuthorizer(
            "JwtAuthorizer",
            issuer,
            jwt_audience=audience,
            authorizer_name=f"{cfg.SERVICE}-{config.stage}-jwt",
            identity_source=["$request.header.Authorization"],
        )
        self.http_api = apigwv2.HttpApi(
            self,
            "HttpApi",
            api_name=f"{cfg.SERVICE}-{config.stage}",
            description=f"Ragline ({config.stage}) query and document API",
            create_default_stage=False,
            default_authorizer=authorizer,
        )
        integration = integrations.HttpLambdaIntegration(
            "QueryIntegration",
            fn.function,
            payload_format_version=apigwv2.PayloadFormatVersion.VERSION_2_0,
        )
        for method, path in cfg.API_ROUTES:
            self.http_api.add_routes(path=path, methods=[apigwv2.HttpMethod[method]], integration=integration)
        # every path also takes ANY (a method route wins over it), so a known path called with
        # another method reaches the function, which answers 405 with an Allow header, instead
        # of API Gateway's bare 404 "Not Found" (behind the same authorizer: 401 without a token)
        for path in dict.fromkeys(path for _, path in cfg.API_ROUTES):
            self.http_api.add_routes(path=path, methods=[apigwv2.HttpMethod.ANY], integration=integration)

        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=config.log_retention,
            removal_policy=removal,
        )
        self.stage = apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.http_api,
            stage_name="$default",
            auto_deploy=True,
            detailed_metrics_enabled=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=config.api_rate_limit, burst_limit=config.api_burst_limit),
            access_log_settings=_AccessLogSettings(self.access_log_group),
        )
        self.url = self.stage.url
