"""Titan Text Embeddings v2 through Amazon Bedrock batch inference, for large index backfills.

One job per call of :meth:`BedrockBatchEmbedder.embed`: the records are written as one JSONL
file under ``<prefix>input/``, a model invocation job (control plane, client ``bedrock``) reads
it and writes ``<input file name>.out`` under ``<prefix>output/<job name>/`` (Bedrock adds a
folder named after the job id beneath the output URI, so the file is found by listing), and the
caller gets a vector, a token count or an error per record id.

Shapes pinned from the AWS documentation:

* CreateModelInvocationJob: ``jobName`` (``[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\\-.]){0,63}``),
  ``roleArn``, ``modelId``, ``inputDataConfig.s3InputDataConfig{s3Uri, s3InputFormat="JSONL"}``,
  ``outputDataConfig.s3OutputDataConfig{s3Uri}``, ``clientRequestToken`` (idempotency),
  ``timeoutDurationInHours`` (24..168); response ``jobArn``.
  https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelInvocationJob.html
* GetModelInvocationJob(``jobIdentifier``): ``status`` one of Submitted, Validating, Scheduled,
  InProgress, Stopping (running) or Completed, PartiallyCompleted, Failed, Stopped, Expired
  (terminal); ``message`` says why a job failed.
* Input record (InvokeModel body of Titan v2): ``{"recordId", "modelInput": {"inputText",
  "dimensions", "normalize"}}``. Output line: ``{"recordId", "modelInput", "modelOutput":
  {"embedding", "inputTextTokenCount"}}``, or ``"error": {"errorCode", "errorMessage"}`` in
  place of ``modelOutput``.
  https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html

The polling loop is hand-written (boto3 has no waiter for model invocation jobs); its clock
and sleep are injected so tests take no wall time.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from ...errors import ModelError
from ...settings import Settings, get_settings
from ._boto import LazyClient, boto3_client_factory, client_config, raise_translated

RUNNING = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
READABLE = frozenset({"Completed", "PartiallyCompleted"})  # output exists (maybe with error lines)
MIN_TIMEOUT_HOURS = 24


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix ending in '/' or '')."""
    m = re.match(r"^s3://([^/]+)/?(.*)$", uri or "")
    if not m:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    prefix = m.group(2)
    return m.group(1), (prefix if not prefix or prefix.endswith("/") else prefix + "/")


def job_name(*parts: str) -> str:
    """A job name Bedrock accepts: letters, digits and single '-' between them, at most 63."""
    text = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-")
    return text[:63].rstrip("-") or "ragline"


@dataclass
class BatchResult:
    job_arn: str
    job_name: str
    status: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: dict[str, int | None] = field(default_factory=dict)  # None: the output gave no count
    errors: dict[str, str] = field(default_factory=dict)  # record id -> why it has no vector
    input_uri: str = ""
    output_key: str | None = None


class BedrockBatchEmbedder:
    def __init__(
        self,
        *,
        role_arn: str,
        s3_uri: str,
        model_id: str | None = None,
        dimensions: int | None = None,
        settings: Settings | None = None,
        bedrock_client: Any | None = None,
        s3_client: Any | None = None,
        poll_s: float | None = None,
        deadline_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        settings_ = settings or get_settings()
        if not role_arn:
            raise ValueError("batch inference needs a service role (RAGLINE_INDEX_BATCH_ROLE_ARN)")
        self.role_arn = role_arn
        self.bucket, self.prefix = parse_s3_uri(s3_uri)
        self.model_id = model_id or settings_.bedrock_embedding_model
        self.dimensions = dimensions or settings_.bedrock_embedding_dimensions
        self.poll_s = poll_s if poll_s is not None else settings_.index_build.batch_poll_s
        self.deadline_s = deadline_s if deadline_s is not None else settings_.index_build.batch_deadline_s
        self.clock, self.sleep = clock, sleep
        self._bedrock = LazyClient(bedrock_client, boto3_client_factory("bedrock", settings_, client_config()))
        self._s3 = LazyClient(s3_client, boto3_client_factory("s3", settings_, client_config(read_timeout_s=60.0)))

    # ------------------------------------------------------------------ bodies (public for tests)
    def record(self, record_id: str, text: str) -> dict[str, Any]:
        return {"recordId": record_id,
                "modelInput": {"inputText": text, "dimensions": self.dimensions, "normalize": True}}

    def job_request(self, name: str, input_key: str, output_prefix: str) -> dict[str, Any]:
        return {
            "jobName": name,
            "roleArn": self.role_arn,
            "modelId": self.model_id,
            "clientRequestToken": hashlib.sha256(f"{name}|{input_key}".encode()).hexdigest()[:64],
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{self.bucket}/{input_key}",
                                                      "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/{output_prefix}"}},
            "timeoutDurationInHours": max(MIN_TIMEOUT_HOURS, int(np.ceil(self.deadline_s / 3600))),
        }

    # ------------------------------------------------------------------ the job
    def embed(self, records: Sequence[tuple[str, str]], name: str) -> BatchResult:
        """Embed ``(record_id, text)`` pairs in one batch job named ``name``. Raises
        :class:`ModelError` naming the job when it fails, stops, expires or outlives the deadline;
        records the output lacks or reports as errors are in ``BatchResult.errors``."""
        if not records:
            raise ValueError("a batch job needs at least one record")
        ids = [r for r, _ in records]
        if len(set(ids)) != len(ids):
            raise ValueError("record ids must be unique")
        name = job_name(name)
        input_name = f"{name}.jsonl"
        input_key = f"{self.prefix}input/{input_name}"
        output_prefix = f"{self.prefix}output/{name}/"
        body = "\n".join(json.dumps(self.record(r, t), separators=(",", ":")) for r, t in records) + "\n"
        try:
            self._s3.get().put_object(Bucket=self.bucket, Key=input_key, Body=body.encode("utf-8"),
                                      ContentType="application/jsonl")
            job_arn = self._bedrock.get().create_model_invocation_job(
                **self.job_request(name, input_key, output_prefix))["jobArn"]
        except (ClientError, BotoCoreError) as exc:
            raise_translated(f"bedrock batch job {name}", exc)
        status = self._wait(name, job_arn)
        result = BatchResult(job_arn=job_arn, job_name=name, status=status,
                             input_uri=f"s3://{self.bucket}/{input_key}")
        result.output_key = self._find_output(output_prefix, f"{input_name}.out")
        if result.output_key is None:
            raise ModelError(f"bedrock batch job {name} ({job_arn}) is {status} but wrote no "
                             f"{input_name}.out under s3://{self.bucket}/{output_prefix}")
        self._read_output(result, set(ids))
        return result

    def _wait(self, name: str, job_arn: str) -> str:
        start = self.clock()
        while True:
            try:
                job = self._bedrock.get().get_model_invocation_job(jobIdentifier=job_arn)
            except (ClientError, BotoCoreError) as exc:
                raise_translated(f"bedrock batch job {name}", exc)
            status = job.get("status", "")
            if status in READABLE:
                return status
            if status not in RUNNING:  # Failed, Stopped, Expired (or a status unknown to us)
                reason = job.get("message") or "no message"
                raise ModelError(f"bedrock batch job {name} ({job_arn}) ended {status}: {reason}")
            waited = self.clock() - start
            if waited >= self.deadline_s:
                raise ModelError(f"bedrock batch job {name} ({job_arn}) is still {status} after "
                                 f"{waited:.0f} s (deadline {self.deadline_s:.0f} s); it keeps running: "
                                 "stop it or build again later")
            self.sleep(min(self.poll_s, max(0.0, self.deadline_s - waited)))

    def _find_output(self, prefix: str, file_name: str) -> str | None:
        s3 = self._s3.get()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    if item["Key"] == f"{prefix}{file_name}" or item["Key"].endswith(f"/{file_name}"):
                        return item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise_translated(f"s3 bucket {self.bucket}", exc)
        return None

    def _read_output(self, result: BatchResult, expected: set[str]) -> None:
        try:
            body = self._s3.get().get_object(Bucket=self.bucket, Key=result.output_key)["Body"]
            lines = body.iter_lines()
            for n, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                self._read_line(result, raw, n, expected)
        except (ClientError, BotoCoreError) as exc:
            raise_translated(f"s3 object {result.output_key}", exc)
        for rid in expected - result.vectors.keys() - result.errors.keys():
            result.errors[rid] = f"no output line for the record (job {result.status})"

    def _read_line(self, result: BatchResult, raw: bytes, n: int, expected: set[str]) -> None:
        try:
            line = json.loads(raw)
            rid = str(line["recordId"])
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"bedrock batch job {result.job_name}: line {n} of {result.output_key} "
                             "is not a record") from None
        if rid not in expected:
            return  # not ours (never expected; ignored rather than trusted)
        error = line.get("error")
        output = line.get("modelOutput")
        if error or not isinstance(output, dict):
            if isinstance(error, dict):
                reason = f"{error.get('errorCode', '?')}: {error.get('errorMessage', 'no message')}"
            else:
                reason = str(error or "no modelOutput")
            result.errors[rid] = reason
            return
        vector = np.asarray(output.get("embedding") or (), dtype=np.float32)
        norm = float(np.linalg.norm(vector)) if vector.size else 0.0
        if vector.shape != (self.dimensions,) or norm == 0.0:
            result.errors[rid] = f"embedding of shape {vector.shape} (norm {norm:.3g}); expected ({self.dimensions},)"
            return
        result.vectors[rid] = vector / norm
        tokens = output.get("inputTextTokenCount")
        result.tokens[rid] = int(tokens) if tokens is not None else None
