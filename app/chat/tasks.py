"""Chat jobs: summarise a long conversation so that its summary stands in for its older turns."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from app.chat import services
from app.gateway.client import GatewayRefused, chat_token, complete
from app.jobs.registry import JobContext, JobFailed, job_kind
from app.schemas import Input
from db.chat import Conversation, Summary
from db.session import tenant_session

SUMMARY_PROMPT = """Summarise this conversation for your own later reference: the user's goals, decisions,
facts given, open questions. Be concise; keep names, numbers and commitments exactly. Answer with the summary
only."""


class SummarizePayload(Input):
    conversation_id: UUID


@job_kind("chat.summarize", payload_type=SummarizePayload, timeout_seconds=300)
async def summarize_conversation(job: JobContext) -> dict[str, Any]:
    payload = msgspec.convert(job.payload, SummarizePayload)
    session = job.session
    conversation = await session.get(Conversation, payload.conversation_id)
    if conversation is None:
        return {"skipped": "the conversation was deleted"}
    previous = await services.latest_summary(session, conversation.id)
    messages = await services.messages_after(session, conversation.id, previous)
    to_summarise = messages[: -services.KEEP_RECENT_MESSAGES]
    if not to_summarise:
        return {"skipped": "nothing old enough to summarise"}
    transcript = "\n".join(f"{message.role}: {message.content}" for message in to_summarise)
    if previous is not None:
        transcript = f"Earlier summary:\n{previous.summary_text}\n\nThen:\n{transcript}"
    async with tenant_session(job.services.session_maker, job.tenant_id) as token_session:
        token = await chat_token(token_session, conversation.user_id)
        await token_session.commit()
    try:
        answer = await complete(
            job.services.gateway,
            token,
            {
                "model": conversation.model,
                "messages": [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": transcript}],
                "max_tokens": 1024,
            },
        )
    except GatewayRefused as refusal:
        if refusal.status_code < 500:
            raise JobFailed(f"The conversation's model could not be called: {refusal.detail}") from None
        raise
    text = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "").strip()
    if not text:
        raise JobFailed("The model returned an empty summary; the conversation keeps its full history.")
    covered = len(to_summarise) + (previous.message_count if previous else 0)
    session.add(
        Summary(
            conversation_id=conversation.id,
            summary_text=text,
            covers_until=to_summarise[-1].created_at,
            message_count=covered,
        )
    )
    return {"summarised_messages": len(to_summarise), "summary_characters": len(text)}
