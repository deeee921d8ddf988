"""An "I don't know" is not cached: it cites no document, so no upload would ever invalidate it
(local adapters, a grounded fake chat model that answers only from the passages it is sent)."""

from __future__ import annotations

import pytest

from ragline.generation.extractive import is_refusal
from ragline.ingest.pipeline import IngestItem
from ragline.models import Generation, Principal


class GroundedChat:
    model_id = "test/grounded-chat"

    def generate(self, system, prompt, *, max_tokens, timeout_s=None, **_):
        if "36 months" in prompt:
            return Generation(text="The warranty period is 36 months [1].", model_id=self.model_id,
                              input_tokens=10, output_tokens=5, used_citations=[1])
        return Generation(text="I don't know: the passages do not say.", model_id=self.model_id,
                          input_tokens=10, output_tokens=5)


def test_a_refusal_is_not_cached_so_the_answering_upload_is_found(make_app):
    app = make_app(chat=GroundedChat())
    who = Principal(tenant="acme", user="u")
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/invoices.md",
                                   data=b"# Invoices\n\nInvoices are kept for ten years in the archive.\n"))
    question = "What is the warranty period of the product?"
    first = app.ask(who, question)
    assert first.answer.startswith("I don't know") and not first.cached
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/warranty.md",
                                   data=b"# Warranty\n\nThe product warranty period is 36 months from delivery.\n"))
    again = app.ask(who, question)
    assert not again.cached and "36 months" in again.answer
    # a real answer is cached as before
    assert app.ask(who, question).cached


@pytest.mark.parametrize(("text", "refusal"), [
    ("I don't know: the passages do not contain the answer.", True),
    ("I don\u2019t know.", True),
    ("I do not know which policy applies.", True),
    ("The provided passages do not mention a warranty.", True),
    ("Invoices are kept for ten years [1]. I don't know about receipts.", False),
    ("Known issues: none [2].", False),
])
def test_what_counts_as_a_refusal(text, refusal):
    assert is_refusal(text) is refusal
