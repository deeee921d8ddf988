"""The local API under concurrent requests from two tenants (real HTTP to LocalApiServer on
127.0.0.1, embedded adapters, hashing embedder). The query handler's Powertools resolver keeps
the current event on itself, as in Lambda, where an instance serves one request at a time; the
local server must give each request its own event, or a request could run with another's
claims (another tenant's principal)."""

from __future__ import annotations

import json
import threading
import urllib.request

from ragline import factory
from ragline.auth import mint_token
from ragline.ingest.pipeline import IngestItem
from ragline.server import LocalApiServer


def test_concurrent_requests_of_two_tenants_each_see_only_their_own(make_app):
    app = make_app()
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/acme-policy.txt",
                                   data=b"Invoices are kept for ten years at Acme."))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/globex-policy.txt",
                                   data=b"Invoices are kept for three years at Globex."))
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    tokens = {t: mint_token(app.settings, t, f"user-{t}", []) for t in ("acme", "globex")}
    wrong, statuses = [], []

    def worker(tenant: str, n: int) -> None:
        for i in range(n):
            req = urllib.request.Request(base + "/v1/query", method="POST",
                                         data=json.dumps({"question": f"How long are invoices kept? ({i})"}).encode())
            req.add_header("Authorization", "Bearer " + tokens[tenant])
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    body = json.loads(r.read())
                    statuses.append(r.status)
            except urllib.error.HTTPError as e:
                statuses.append(e.code)
                continue
            if any(not c["source"].startswith(f"tenants/{tenant}/") for c in body["citations"]):
                wrong.append((tenant, [c["source"] for c in body["citations"]]))

    try:
        threads = [threading.Thread(target=worker, args=(t, 15)) for t in ("acme", "globex") * 4]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        srv.shutdown()
        factory.use(None)
    assert wrong == [] and set(statuses) == {200}, (wrong[:3], sorted(set(statuses)))
