"""The operator page served by ``ragline serve`` at ``/`` (technique: the real local server on
127.0.0.1 with embedded adapters, driven in headless Debian Chromium through Playwright; a
screenshot of each view is saved under tests/artifacts/). The page's JSON endpoint is also
checked directly for tenancy and the admin-only cross-tenant view."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ragline import factory
from ragline.auth import mint_token
from ragline.ingest.pipeline import IngestItem

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def site(app):
    from ragline.server import LocalApiServer

    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.txt",
                                   data=b"Invoices are kept for ten years. Payroll records are kept for seven years."))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/broken.xyz", data=b"\x00"))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/x.txt", data=b"Globex invoices are kept forever."))
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", app
    srv.shutdown()
    srv.server_close()
    factory.use(None)


def get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_page_is_served_without_a_token_and_ops_stats_are_tenant_scoped(site):
    base, app = site
    status, ctype, body = get(base + "/")
    assert status == 200 and ctype.startswith("text/html") and b"<title>Ragline</title>" in body
    assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", body)  # nothing fetched from elsewhere
    assert get(base + "/v1/ops/stats")[0] == 401
    member = mint_token(app.settings, "acme", "bob")
    status, _, body = get(base + "/v1/ops/stats?days=7", member)
    assert status == 403 and b"admins" in body  # a tenant's figures are its admins'
    user = mint_token(app.settings, "acme", "ann", ["admins"])
    status, _, body = get(base + "/v1/ops/stats?days=7", user)
    stats = json.loads(body)
    assert status == 200 and stats["tenant"] == "acme" and set(stats["documents"]) == {"acme"}
    assert get(base + "/v1/ops/stats?all_tenants=true", user)[0] == 403
    admin = mint_token(app.settings, "acme", "root", scopes=[app.settings.admin_scope])
    status, _, body = get(base + "/v1/ops/stats?all_tenants=true", admin)
    assert status == 200 and set(json.loads(body)["documents"]) == {"acme", "globex"}
    assert get(base + "/v1/ops/stats?days=0", user)[0] == 422


def test_ask_through_the_page_in_headless_chromium(site):
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    base, app = site
    token = mint_token(app.settings, "acme", "ann", ["admins"])  # the operations tab is the admins'
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.fill("#token", token)
            page.dispatch_event("#token", "change")
            page.fill("#question", "How long are invoices kept?")
            page.click("#ask-btn")
            page.wait_for_selector("#citations li.citation", timeout=20000)
            assert "ten years" in page.inner_text("#answer")
            assert "retention.txt" in page.inner_text("#citations")
            meta = page.inner_text("#meta")
            assert "cache: miss" in meta and "variant: none" in meta and "cost: $" in meta
            page.screenshot(path=str(ARTIFACTS / "page-ask.png"), full_page=True)
            page.click("nav button[data-tab=docs]")
            page.wait_for_selector("#docs tr", timeout=20000)
            docs = page.inner_text("#docs")
            assert "indexed" in docs and "unsupported" in docs and "globex" not in docs
            page.screenshot(path=str(ARTIFACTS / "page-documents.png"), full_page=True)
            page.click("nav button[data-tab=ops]")
            sync_api.expect(page.locator("#ops-status")).to_have_text(re.compile(r"^tenant acme"), timeout=20000)
            assert page.locator("#chart-latency svg rect").count() >= 3
            assert page.locator("#chart-eval svg rect").count() >= 4
            page.screenshot(path=str(ARTIFACTS / "page-operations.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert (ARTIFACTS / "page-ask.png").stat().st_size > 10_000
