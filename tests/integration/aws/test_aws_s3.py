"""S3BlobStore against moto's S3 server on 127.0.0.1 (technique: moto ThreadedMotoServer; real
HTTP and botocore serialization, dummy credentials).

About presigned POST limits: moto 5.x stores a browser-form POST without evaluating its policy
(its ``_bucket_response_post`` never reads the policy), so moto cannot show that an oversize or
wrongly typed upload is refused. We therefore (1) upload through moto to prove the URL and form
fields make a working upload, and (2) prove the limits by decoding the *signed* policy, checking
its SigV4 signature with the dummy secret, and evaluating its conditions the way S3 does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import boto3
import pytest
import requests
from botocore.config import Config

from ragline.adapters.aws import S3BlobStore
from ragline.errors import DependencyUnavailable, InvalidInput, NotFound, ObjectTooLarge
from ragline.ports import BlobStore
from ragline.settings import Settings


@pytest.fixture()
def store(s3_client, bucket) -> S3BlobStore:
    return S3BlobStore(bucket, client=s3_client, settings=Settings())


def test_implements_the_port(store):
    assert isinstance(store, BlobStore)


def test_put_then_get_returns_bytes_version_etag_and_type(store):
    written = store.put("t1/a.txt", b"hello", content_type="text/plain")
    assert written.version_id and written.etag and not written.etag.startswith('"')

    blob = store.get("t1/a.txt")
    assert blob.data == b"hello"
    assert blob.content_type == "text/plain"
    assert blob.version_id == written.version_id
    assert blob.etag == written.etag == hashlib.md5(b"hello").hexdigest()


def test_get_reads_an_exact_version(store):
    v1 = store.put("t1/doc.md", b"first", content_type="text/markdown")
    v2 = store.put("t1/doc.md", b"second", content_type="text/markdown")
    assert v1.version_id != v2.version_id
    assert store.get("t1/doc.md").data == b"second"
    assert store.get("t1/doc.md", version_id=v1.version_id).data == b"first"


def test_missing_key_and_missing_version_are_not_found(store):
    with pytest.raises(NotFound):
        store.get("t1/nothing")
    store.put("t1/x", b"x")
    with pytest.raises(NotFound):
        store.get("t1/x", version_id="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")


def test_get_with_a_limit_refuses_a_bigger_object_without_reading_its_body(store, monkeypatch):
    big = store.client.put_object(Bucket=store.bucket, Key="t1/big.bin", Body=b"x" * 2048,
                                  Metadata={"ragline-groups": "hr"})
    store.put("t1/fits.bin", b"y" * 1024)
    real = store.client.get_object
    bodies = []

    def spy(**kwargs):
        response = real(**kwargs)
        body = response["Body"]
        reads = []
        original = body.read
        body.read = lambda *a, **k: reads.append(1) or original(*a, **k)
        bodies.append((kwargs["Key"], reads))
        return response

    monkeypatch.setattr(store.client, "get_object", spy)
    with pytest.raises(ObjectTooLarge) as err:
        store.get("t1/big.bin", max_bytes=1024)
    assert (err.value.size, err.value.limit) == (2048, 1024)
    # what the headers said: the version and the ACL groups, so the failed record keeps both
    assert err.value.version_id == big["VersionId"] and err.value.metadata == {"ragline-groups": "hr"}
    assert store.get("t1/fits.bin", max_bytes=1024).data == b"y" * 1024  # the limit itself is allowed
    assert bodies == [("t1/big.bin", []), ("t1/fits.bin", [1])]  # the big body was never read


def test_delete_hides_the_key_but_keeps_old_versions(store):
    written = store.put("t1/gone.txt", b"bye")
    store.delete("t1/gone.txt")
    with pytest.raises(NotFound):
        store.get("t1/gone.txt")
    assert store.get("t1/gone.txt", version_id=written.version_id).data == b"bye"
    store.delete("t1/never-existed")  # deleting a missing key is not an error


def test_list_follows_pagination_and_respects_the_prefix(store):
    keys = [f"t1/many/{i:05d}.txt" for i in range(1003)]  # S3 pages hold 1000 keys
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"."), keys))
    store.put("t2/other.txt", b".")
    listed = list(store.list("t1/many/"))
    assert sorted(listed) == keys
    assert list(store.list("t2/")) == ["t2/other.txt"]
    assert list(store.list("t3/")) == []


# --- presigned POST ---------------------------------------------------------------------------


def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _policy_allows(policy: dict, fields: dict[str, str], bucket: str, size: int) -> tuple[bool, str]:
    """S3's POST policy rules: not expired; every condition holds; every form field is covered."""
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if expiration <= datetime.now(UTC):
        return False, "expired"
    form = {k.lower(): v for k, v in fields.items()} | {"bucket": bucket}
    covered = {"bucket"}
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            name = name.lower()
            covered.add(name)
            if form.get(name) != value:
                return False, f"{name} must equal {value!r}"
        elif condition[0] == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if not low <= size <= high:
                return False, f"size {size} outside [{low}, {high}]"
        elif condition[0] in ("eq", "starts-with"):
            name = condition[1].lstrip("$").lower()
            covered.add(name)
            actual = form.get(name, "")
            ok = actual == condition[2] if condition[0] == "eq" else actual.startswith(condition[2])
            if not ok:
                return False, f"{name} fails {condition[0]}"
    extra = set(form) - covered - {"policy", "x-amz-signature"}
    if extra:
        return False, f"fields not covered by the policy: {sorted(extra)}"
    return True, "ok"


def test_presigned_post_uploads_through_moto(store, bucket):
    post = store.presign_put("t1/uploads/report.pdf", "application/pdf", max_bytes=1024, expires_s=300)
    assert post["method"] == "POST" and post["expires_in"] == 300
    assert post["url"].endswith(f"/{bucket}")

    response = requests.post(
        post["url"],
        data=post["fields"],
        files={"file": ("report.pdf", b"%PDF-1.7 tiny", "application/pdf")},
        timeout=10,
    )
    assert response.status_code in (200, 201, 204), response.text
    assert store.get("t1/uploads/report.pdf").data == b"%PDF-1.7 tiny"


def test_presigned_post_policy_is_signed_and_limits_key_type_and_size(
    store, bucket, aws_region, aws_secret_key
):
    post = store.presign_put("t1/uploads/report.pdf", "application/pdf", max_bytes=1024, expires_s=300)
    fields = post["fields"]
    assert fields["key"] == "t1/uploads/report.pdf"
    assert fields["Content-Type"] == "application/pdf"

    # the policy S3 will enforce is exactly the one signed with our (dummy) secret
    credential = fields["x-amz-credential"].split("/")
    assert credential[2:] == [aws_region, "s3", "aws4_request"]
    signing_key = _signing_key(aws_secret_key, credential[1], aws_region, "s3")
    expected = hmac.new(signing_key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["x-amz-signature"])

    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 1, 1024] in policy["conditions"]
    assert {"Content-Type": "application/pdf"} in policy["conditions"]
    assert {"key": "t1/uploads/report.pdf"} in policy["conditions"]
    assert {"bucket": bucket} in policy["conditions"]

    assert _policy_allows(policy, fields, bucket, size=1024) == (True, "ok")
    allowed, why = _policy_allows(policy, fields, bucket, size=1025)
    assert not allowed and "size 1025" in why
    allowed, why = _policy_allows(policy, fields, bucket, size=0)
    assert not allowed  # empty uploads are refused too
    allowed, why = _policy_allows(policy, fields | {"Content-Type": "text/html"}, bucket, size=10)
    assert not allowed and "content-type" in why
    allowed, why = _policy_allows(policy, fields | {"key": "t2/steal.pdf"}, bucket, size=10)
    assert not allowed and "key" in why


@pytest.mark.parametrize(
    ("content_type", "max_bytes", "expires_s"),
    [("", 10, 60), ("text/plain", 0, 60), ("text/plain", 10, 0), ("text/plain", 10, 8 * 24 * 3600)],
)
def test_presign_refuses_unlimited_uploads(store, content_type, max_bytes, expires_s):
    with pytest.raises(InvalidInput):
        store.presign_put("t1/x", content_type, max_bytes, expires_s)


def test_unreachable_s3_is_a_transient_dependency_error(aws_region):
    client = boto3.session.Session().client(
        "s3",
        region_name=aws_region,
        endpoint_url="http://127.0.0.1:9",  # discard port: connection refused
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = S3BlobStore("any", client=client, settings=Settings())
    with pytest.raises(DependencyUnavailable) as info:
        store.get("k")
    assert info.value.transient


def test_construction_is_offline_and_needs_a_bucket(aws_region):
    with pytest.raises(ValueError, match="RAGLINE_DOCUMENTS_BUCKET"):
        S3BlobStore(settings=Settings())
    store = S3BlobStore(settings=Settings(documents_bucket="b", region=aws_region))
    assert store._client._client is None  # nothing built until first use


def test_presigned_post_carries_the_acl_groups_and_forbids_changing_them(store, bucket):
    """moto's server stores the form's x-amz-meta-* fields as the object's metadata (what the
    ingest reads); the policy check is ours (moto does not evaluate policies)."""
    from ragline.ingest.events import GROUPS_METADATA

    post = store.presign_put("t1/uploads/minutes.txt", "text/plain", max_bytes=100, expires_s=300,
                             metadata={GROUPS_METADATA: "board"})
    fields = post["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert {f"x-amz-meta-{GROUPS_METADATA}": "board"} in policy["conditions"]
    assert _policy_allows(policy, fields, bucket, size=10) == (True, "ok")
    # dropping or widening the groups is refused by the signed policy
    allowed, why = _policy_allows(policy, {k: v for k, v in fields.items() if "meta" not in k}, bucket, size=10)
    assert not allowed and GROUPS_METADATA in why
    allowed, _ = _policy_allows(policy, fields | {f"x-amz-meta-{GROUPS_METADATA}": "board,everyone"}, bucket, size=10)
    assert not allowed
    response = requests.post(post["url"], data=fields, files={"file": ("minutes.txt", b"Board only.", "text/plain")},
                             timeout=10)
    assert response.status_code in (200, 201, 204), response.text
    assert store.get("t1/uploads/minutes.txt").metadata[GROUPS_METADATA] == "board"


def test_the_upload_url_of_the_api_signs_the_callers_groups(store, bucket, tmp_path):
    from ragline_testing import HashEmbedder

    from ragline import factory
    from ragline.ingest.events import GROUPS_METADATA
    from ragline.models import Principal
    from ragline.settings import Settings

    app = factory.build(Settings(home=tmp_path / "home", jwt_secret="x" * 40), embedder=HashEmbedder())
    app.blobs = store
    alice = Principal(tenant="acme", user="alice", groups=frozenset({"board", "admins"}))
    out = app.upload_url(alice, "minutes.txt", None, 40, ["board"])
    assert out["fields"][f"x-amz-meta-{GROUPS_METADATA}"] == "board" and out["groups"] == ["board"]
    public = app.upload_url(alice, "notes.txt", None, 40, [])
    assert not any("meta" in k for k in public["fields"])
