"""The service role Amazon Bedrock assumes to run batch inference for index builds.

``ragline index build`` (run by an operator, not a function) embeds a large backfill as one
Bedrock model invocation job when ``RAGLINE_INDEX_BATCH_ROLE_ARN`` and ``RAGLINE_INDEX_BATCH_S3_URI``
are set (the stack outputs ``IndexBatchRoleArn`` and ``IndexBatchS3Uri``). Bedrock reads the JSONL
input under ``<prefix>input/`` and writes its output under ``<prefix>output/`` of the documents
bucket, with this role:

* trust: ``bedrock.amazonaws.com`` only for jobs of this account (``aws:SourceAccount``) and
  only model invocation jobs in this region (``aws:SourceArn``), the confused-deputy guard the
  Bedrock user guide asks for;
* S3: read the input prefix, write the output prefix, list only those two prefixes;
* KMS: decrypt the input and encrypt the output with the bucket's key (the bucket is SSE-KMS);
* Bedrock: ``InvokeModel`` on the embedding model's ARN(s) only.
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from constructs import Construct

from . import config as cfg
from . import nag
from .storage import DocumentStorage

WILDCARD_REASON = (
    "Batch job files are named per job at run time (one JSONL input per build, one output folder per job), "
    "so the grant is the fixed input/ or output/ prefix of the index-build area, never the tenants/ documents."
)


class IndexBatchInference(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig,
                 storage: DocumentStorage) -> None:
        super().__init__(scope, construct_id)
        self.prefix = cfg.INDEX_BATCH_PREFIX
        self.s3_uri = f"s3://{storage.bucket.bucket_name}/{self.prefix}"
        self.role = iam.Role(
            self,
            "Role",
            description=f"Ragline ({config.stage}): Bedrock batch inference for index builds",
            assumed_by=iam.ServicePrincipal(
                "bedrock.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}:{Aws.ACCOUNT_ID}"
                                                 ":model-invocation-job/*"},
                },
            ),
        )
        statements = [
            iam.PolicyStatement(sid="ReadBatchInput", actions=["s3:GetObject"],
                                resources=[storage.bucket.arn_for_objects(f"{self.prefix}input/*")]),
            iam.PolicyStatement(sid="WriteBatchOutput", actions=["s3:PutObject"],
                                resources=[storage.bucket.arn_for_objects(f"{self.prefix}output/*")]),
            iam.PolicyStatement(sid="ListBatchPrefixes", actions=["s3:ListBucket"],
                                resources=[storage.bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{self.prefix}input/*",
                                                                         f"{self.prefix}output/*"]}}),
            iam.PolicyStatement(sid="UseDocumentsKey", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                resources=[storage.key.key_arn]),
            iam.PolicyStatement(
                sid="InvokeEmbeddingModel", actions=["bedrock:InvokeModel"],
                resources=cfg.bedrock_model_arns(config.embedding_model, partition=Aws.PARTITION,
                                                 region=Aws.REGION, account=Aws.ACCOUNT_ID)),
        ]
        policy = iam.Policy(self, "Policy", statements=statements, roles=[self.role])
        nag.acknowledge_wildcards(policy, statements, WILDCARD_REASON)
