"""Document storage: the customer-managed key, the documents bucket and its access-log bucket.

Documents live under ``tenants/<tenant>/...``. Object-created and object-removed events for
that prefix go straight to the ingest queue through the bucket's own
``NotificationConfiguration`` (no custom-resource Lambda): the bucket gets a deterministic
name so the queue policy can name it without a circular reference.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from . import config as cfg


class DocumentStorage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "DataKey",
            description=f"Ragline ({config.stage}): documents at rest",
            enable_key_rotation=True,
            # The documents bucket is retained on stack deletion; its key must outlive it.
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            # S3 server access logging cannot deliver to an SSE-KMS bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="ExpireAccessLogs", expiration=cfg.ACCESS_LOG_EXPIRATION)],
            removal_policy=RemovalPolicy.RETAIN,
        )
        # cdk-nag's S1 accepts a bucket that is itself the access-log destination.

        self.bucket_name = f"{cfg.SERVICE}-{config.stage}-docs-{Aws.ACCOUNT_ID}-{Aws.REGION}"
        self.bucket = s3.Bucket(
            self,
            "DocumentsBucket",
            bucket_name=self.bucket_name,
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="documents-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireNoncurrentVersions",
                    noncurrent_version_expiration=cfg.NONCURRENT_VERSION_EXPIRATION,
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket_arn = f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}"

    # ----------------------------------------------------------------------------------
    def objects_arn(self, pattern: str = "*") -> str:
        return self.bucket.arn_for_objects(f"{cfg.DOCUMENTS_PREFIX}{pattern}")

    def notify_queue(self, queue: sqs.Queue) -> None:
        """Deliver ObjectCreated/ObjectRemoved events under ``tenants/`` to ``queue``."""
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowDocumentsBucketEvents",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": self.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        prefix_filter = s3.CfnBucket.NotificationFilterProperty(
            s3_key=s3.CfnBucket.S3KeyFilterProperty(
                rules=[s3.CfnBucket.FilterRuleProperty(name="prefix", value=cfg.DOCUMENTS_PREFIX)]
            )
        )
        cfn_bucket: s3.CfnBucket = self.bucket.node.default_child  # type: ignore[assignment]
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[
                s3.CfnBucket.QueueConfigurationProperty(
                    event=event, queue=queue.queue_arn, filter=prefix_filter
                )
                for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
            ]
        )
        # S3 sends a test message when the configuration is created: the queue policy must
        # already allow it.
        self.bucket.node.add_dependency(queue.node.find_child("Policy"))
