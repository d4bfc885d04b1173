"""Documents that cannot be ingested, through the real job: each ends `failed` with a reason a person can act on,
with no passage searchable and nothing paid; a base whose embedding channel is gone says so in search too."""

from __future__ import annotations

import io
import zipfile

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from tests.integration.knowledge.test_ingestion import (
    BASES,
    CHANNEL,
    TERMINAL,
    chunks_of,
    markdown,
    settled_usage,
    setup_base,
    uploaded,
    wait_for_document,
)
from tests.support.clients import AuthHeaders, Client
from tests.support.jobs import running_worker
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows


def zip_bomb_docx() -> bytes:
    """A real zip named like a Word document whose body inflates to 80 MB of spaces (about 80 KB on disk)."""
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (80 * 1024 * 1024))
    return bomb.getvalue()


def corrupt_pdf() -> bytes:
    """A PDF's header and trailer around bytes that are no PDF objects."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


async def test_a_zip_bomb_and_a_corrupt_pdf_fail_with_their_reason_and_nothing_is_searchable_or_paid(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    bomb_data = zip_bomb_docx()
    assert len(bomb_data) < 200_000
    bomb = await uploaded(client, user, base["id"], "contract.docx", bomb_data)
    corrupt = await uploaded(client, user, base["id"], "report.pdf", corrupt_pdf())
    async with running_worker(settings):
        ended = [await wait_for_document(client, user, document, TERMINAL) for document in (bomb, corrupt)]
    assert [document["status"] for document in ended] == ["failed", "failed"]
    assert "expands to more than can be read" in ended[0]["error"]
    assert "could not be read" in ended[1]["error"]
    for document in (bomb, corrupt):
        counts = await chunks_of(session_maker, tenant_a, document["id"])
        assert (counts.sections, counts.passages) == ([], [])
    assert upstream.calls[CHANNEL] == 0
    assert await settled_usage(session_maker, tenant_a, 0) == []


async def test_a_base_whose_embedding_channel_is_gone_fails_ingestion_and_search_naming_the_model(
    client: Client,
    settings: Settings,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    base = await setup_base(client, upstream, admin, user)
    channels = (await client.get("/api/channels", headers=admin)).json()
    channel_ids = [channel["id"] for channel in channels if channel["name"] == CHANNEL]
    assert len(channel_ids) == 1
    assert (await client.delete(f"/api/channels/{channel_ids[0]}", headers=admin)).status_code == 204

    document = await uploaded(client, user, base["id"], "handbook.md", markdown(3))
    async with running_worker(settings):
        ended = await wait_for_document(client, user, document, TERMINAL)
    assert ended["status"] == "failed"
    assert ended["error"].startswith("The embedding model could not be called")
    assert base["embedding_model"] in ended["error"]
    # Nothing searchable: the passages written before the embedding are kept for a retry, but not ready.
    assert (await chunks_of(session_maker, tenant_a, document["id"])).embedded == []

    searched = await client.post(
        f"{BASES}/{base['id']}/search", json={"query": "drawer keeper", "mode": "hybrid"}, headers=user
    )
    assert 400 <= searched.status_code < 500, searched.text
    assert base["embedding_model"] in searched.json()["detail"]
    by_words = await client.post(
        f"{BASES}/{base['id']}/search", json={"query": "drawer keeper", "mode": "text"}, headers=user
    )
    # A search by words needs no embedding: it answers, and finds nothing, since the document is not ready.
    assert by_words.status_code == 200, by_words.text
    assert by_words.json() == []
