"""The invocation deadline (technique: plain unit test with a fake Lambda context): it holds
while a handler runs and is cleared when the handler returns or raises, so one invocation's
spent budget never reaches later work on the same thread (this once failed an unrelated
generation test that ran after a handler test)."""

from __future__ import annotations

import pytest

from ragline.runtime import invocation_deadline, remaining_s


class _Context:
    def __init__(self, ms: int):
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


def test_deadline_holds_during_the_invocation_and_is_cleared_after():
    seen = []

    @invocation_deadline
    def handler(event, context):
        seen.append(remaining_s(30.0))
        if event == "boom":
            raise RuntimeError("handler failed")
        return "ok"

    assert handler({}, _Context(0)) == "ok"
    assert seen[-1] == 0.0  # a spent budget inside the invocation
    assert remaining_s(30.0) == 30.0  # ... and none after it
    with pytest.raises(RuntimeError):
        handler("boom", _Context(2000))
    assert 0 < seen[-1] <= 2.0 and remaining_s(30.0) == 30.0
    handler({}, None)  # no Lambda context (CLI, local): no deadline
    assert seen[-1] == 30.0
