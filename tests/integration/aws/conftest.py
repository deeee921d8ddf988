"""Fixtures for the AWS adapter tests.

S3 and DynamoDB tests run against moto's server on 127.0.0.1 (real HTTP, real botocore
serialization); nothing here reaches AWS. Credentials are dummies set for the session.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_LAYER = Path(__file__).resolve().parents[3] / "layers" / "python"
if str(_LAYER) not in sys.path:  # the package may not be installed into the venv
    sys.path.insert(0, str(_LAYER))

import boto3
from botocore.config import Config
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_env() -> Iterator[None]:
    """Dummy credentials so no test can ever sign a request with real ones."""
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def aws_region() -> str:
    return REGION


@pytest.fixture(scope="session")
def aws_secret_key() -> str:
    return SECRET_KEY


class SerializedMotoServer(ThreadedMotoServer):
    """moto's ThreadedMotoServer with one change: the backend handles one request at a time.

    moto's backends are not thread-safe (its TransactWriteItems deep-copies a table that another
    request thread is mutating, and answers 500). Real DynamoDB serializes conflicting writes
    (and reports TransactionConflict, which the ledger tests drive with a Stubber), so a lock
    around the backend is the faithful model. Clients still connect and send concurrently.
    """

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ, start_response):
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(
            self._ip_address, self._port, serialized, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@pytest.fixture(scope="session")
def moto_endpoint(_dummy_aws_env: None) -> Iterator[str]:
    server = SerializedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _client(service: str, endpoint: str, **config: object):
    return boto3.session.Session().client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            retries={"total_max_attempts": 1}, max_pool_connections=32, **config
        ),  # no masking retries
    )


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str):
    return _client("s3", moto_endpoint, s3={"addressing_style": "path"}, signature_version="s3v4")


@pytest.fixture(scope="session")
def dynamodb_client(moto_endpoint: str):
    return _client("dynamodb", moto_endpoint)


@pytest.fixture()
def bucket(s3_client) -> str:
    name = f"ragline-docs-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _create_table(client, name: str, *, gsis: list[tuple[str, str, str]] = (), ttl: str | None = None) -> str:
    attributes = {"pk", "sk"} | {a for _, h, r in gsis for a in (h, r)}
    kwargs: dict = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if gsis:
        kwargs["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": h, "KeyType": "HASH"},
                    {"AttributeName": r, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, h, r in gsis
        ]
    client.create_table(**kwargs)
    if ttl:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
        )
    return name


@pytest.fixture()
def registry_table(dynamodb_client) -> str:
    return _create_table(dynamodb_client, f"registry-{uuid.uuid4().hex[:8]}")


@pytest.fixture()
def query_log_table(dynamodb_client) -> str:
    return _create_table(
        dynamodb_client,
        f"querylog-{uuid.uuid4().hex[:8]}",
        gsis=[("by_tenant_time", "pk", "logged_at"), ("by_day_time", "log_day", "logged_at")],
        ttl="expires_at",
    )


@pytest.fixture()
def ledger_table(dynamodb_client) -> str:
    return _create_table(dynamodb_client, f"ledger-{uuid.uuid4().hex[:8]}", ttl="expires_at")


@pytest.fixture(scope="session")
def sqs_client(moto_endpoint: str):
    return _client("sqs", moto_endpoint)


class IngestQueues:
    """An SQS ingest queue whose RedrivePolicy moves a message to ``dlq_url`` after
    ``max_receive_count`` receives (what the CDK stack creates)."""

    def __init__(self, url: str, arn: str, dlq_url: str, dlq_arn: str, max_receive_count: int):
        self.url, self.arn = url, arn
        self.dlq_url, self.dlq_arn = dlq_url, dlq_arn
        self.max_receive_count = max_receive_count


@pytest.fixture()
def ingest_queues(sqs_client) -> IngestQueues:
    import json as _json

    suffix = uuid.uuid4().hex[:8]
    dlq_url = sqs_client.create_queue(QueueName=f"ragline-ingest-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    max_receive_count = 2
    url = sqs_client.create_queue(
        QueueName=f"ragline-ingest-{suffix}",
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": _json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
        },
    )["QueueUrl"]
    arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return IngestQueues(url, arn, dlq_url, dlq_arn, max_receive_count)


@pytest.fixture()
def idempotency_table(dynamodb_client) -> str:
    """Shaped as Powertools' DynamoDBPersistenceLayer expects: partition key ``id``, TTL on
    ``expiration``."""
    name = f"idempotency-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
    )
    return name
