"""CloudFormation custom resource: OpenSearch fine-grained access control roles and mappings.

Runs as the domain's master user (an IAM role). On Create and Update it PUTs each security
role (``Roles``: name -> role definition) and maps IAM role ARNs to it (``RoleMappings``:
name -> list of ARNs) through the security plugin's REST API, signing with SigV4. Delete is
a no-op: the domain is deleted with the stack, or retained with its mappings on purpose.

Only the standard library and botocore (present in every Lambda Python runtime).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

_SESSION = botocore.session.get_session()
RETRYABLE = {403, 429, 500, 502, 503, 504}  # 403: the security index may not be ready yet


def _request(endpoint: str, region: str, method: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    url = endpoint.rstrip("/") + path
    data = json.dumps(body).encode()
    aws_request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(_SESSION.get_credentials(), "es", region).add_auth(aws_request)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(aws_request.headers.items()))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _put(endpoint: str, region: str, path: str, body: dict[str, Any], deadline: float) -> None:
    delay = 5.0
    while True:
        status, text = _request(endpoint, region, "PUT", path, body)
        if 200 <= status < 300:
            return
        if status not in RETRYABLE or time.monotonic() + delay > deadline:
            raise RuntimeError(f"PUT {path} -> {status}: {text[:500]}")
        time.sleep(delay)
        delay = min(delay * 2, 60.0)


def apply(properties: dict[str, Any], deadline: float) -> None:
    endpoint, region = properties["Endpoint"], properties["Region"]
    for name, definition in properties.get("Roles", {}).items():
        _put(endpoint, region, f"/_plugins/_security/api/roles/{name}", definition, deadline)
    for name, backend_roles in properties.get("RoleMappings", {}).items():
        _put(endpoint, region, f"/_plugins/_security/api/rolesmapping/{name}",
             {"backend_roles": list(backend_roles)}, deadline)


def _respond(event: dict[str, Any], status: str, reason: str, physical_id: str) -> None:
    body = json.dumps({
        "Status": status,
        "Reason": reason[:3500],
        "PhysicalResourceId": physical_id,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30):
        pass


def handler(event: dict[str, Any], context: Any) -> None:
    properties = event.get("ResourceProperties", {})
    physical_id = event.get("PhysicalResourceId") or f"{properties.get('Endpoint', 'opensearch')}/security"
    status, reason = "SUCCESS", "ok"
    try:
        if event["RequestType"] in ("Create", "Update"):
            # Leave a minute to report back to CloudFormation.
            deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - 60
            apply(properties, deadline)
    except Exception as exc:  # noqa: BLE001 - reported to CloudFormation, which rolls back
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
        print(reason)
    _respond(event, status, reason, physical_id)
