"""The Responses dialect's seam for a store of responses: a stored conversation's items go first in the chat
translation, and a turn's own items come back normalised (each with its `type`) for keeping."""

from __future__ import annotations

from app.gateway.dialects.responses import ResponsesTurn, parse_items, responses_request, to_chat_request


def test_prior_items_come_before_the_turns_own_and_the_turns_items_are_normalised() -> None:
    request, items = responses_request(
        {
            "model": "gpt-test",
            "instructions": "be brief",
            "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
        }
    )
    prior = parse_items(
        [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        ]
    )
    messages = to_chat_request(request, items, prior)["messages"]
    assert [message["role"] for message in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["id"] == messages[3]["tool_call_id"] == "call_1"

    turn = ResponsesTurn(*responses_request({"model": "gpt-test", "input": "hello", "store": False}))
    assert turn.input_items == [{"type": "message", "role": "user", "content": "hello"}]
    assert not turn.stored
    assert turn.id.startswith("resp_")
