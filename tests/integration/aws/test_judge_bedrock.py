"""The LLM judge on the real Bedrock chat adapter (technique: botocore Stubber on a real
bedrock-runtime client; the Stubber validates request and response shapes against the service
model): a malformed verdict is retried and every call's tokens reach the ledger as "judge"."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import ANY, Stubber

from ragline.adapters.aws import BedrockChatModel
from ragline.adapters.aws.bedrock import bedrock_config
from ragline.evaluation.ragas import JUDGE_SYSTEM, LLMJudge, Sample
from ragline.settings import Settings

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


class ListLedger:
    def __init__(self):
        self.rows = []

    def record(self, tenant, query_id, usages):
        self.rows.extend((tenant, query_id, u) for u in usages)


def reply(text: str, tin: int, tout: int) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": tin, "outputTokens": tout, "totalTokens": tin + tout}, "metrics": {"latencyMs": 300}}


def test_judge_through_converse_retries_malformed_json_and_records_cost(aws_region):
    client = boto3.session.Session().client("bedrock-runtime", region_name=aws_region, config=bedrock_config())
    expected = {"modelId": SONNET, "system": [{"text": JUDGE_SYSTEM}], "messages": ANY, "inferenceConfig": {"maxTokens": 300}}
    with Stubber(client) as stub:
        stub.add_response("converse", reply('{"faithfulness": "high"}', 900, 20), expected)
        stub.add_response("converse", reply('{"faithfulness": 1, "answer_relevancy": 0.5, "context_precision": 1, '
                                            '"context_recall": 1, "reason": "supported"}', 950, 30), expected)
        ledger = ListLedger()
        judge = LLMJudge(BedrockChatModel(SONNET, client=client, settings=Settings()), ledger=ledger, repeats=1)
        out = judge.score(Sample("How long are invoices kept?", "Ten years [1].", ["Invoices are kept ten years."]), "q_7")
        stub.assert_no_pending_responses()
    assert out["faithfulness"] == 1.0 and out["answer_relevancy"] == 0.5 and out["judgements"] == 1
    assert [(t, q, u.purpose, u.input_tokens) for t, q, u in ledger.rows] == [
        ("_evaluation", "q_7", "judge", 900), ("_evaluation", "q_7", "judge", 950)]
    assert ledger.rows[1][2].cost_usd == pytest.approx(0.95 * 0.003 + 0.03 * 0.015)
    # priced by the versioned price table, like every other model call
    assert ledger.rows[1][2].price_version == "2024-11" and not ledger.rows[1][2].estimated


def test_a_judge_reply_without_usage_is_estimated_with_tiktoken_and_priced():
    """A fake chat model (no Bedrock shape involved) that reports no usage fields."""
    from ragline.ledger.pricing import load_price_table
    from ragline.models import Generation
    from ragline.tokens import count_tokens

    verdict = ('{"faithfulness": 1, "answer_relevancy": 1, "context_precision": 1, "context_recall": 1, '
               '"reason": "supported"}')

    class Silent:
        model_id = SONNET

        def generate(self, system, prompt, *, max_tokens, timeout_s=None, **_):
            return Generation(text=verdict, model_id=SONNET, usage_reported=False)

    ledger = ListLedger()
    judge = LLMJudge(Silent(), ledger=ledger, repeats=1, prices=load_price_table("2024-11"))
    judge.score(Sample("How long are invoices kept?", "Ten years [1].", ["Invoices are kept ten years."]), "q_8")
    ((_, _, usage),) = ledger.rows
    assert usage.estimated and usage.input_tokens > count_tokens(JUDGE_SYSTEM)
    assert usage.output_tokens == count_tokens(verdict) and usage.cost_usd > 0
    assert usage.price_version == "2024-11"
