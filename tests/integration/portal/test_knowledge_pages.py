"""Knowledge bases in the portal: the new base form's refusals, uploads without JavaScript (duplicates, wrong
types, too large), a document's passages, confirmed deletions, and who reaches which page."""

from __future__ import annotations

import hashlib
import html
import re
from uuid import UUID

from httpx import Response
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.knowledge import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from db.session import tenant_session
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows

EMBEDDER = "text-embedding-test"
MARKDOWN = b"# Handbook\n\nThe office opens at nine.\n"
GOOD = {"name": "Handbook", "scope": "user", "embedding_model": EMBEDDER, "chunk_tokens": "400"}
GOOD |= {"chunk_overlap": "60", "language": "english", "description": ""}


async def base_count(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows) -> int:
    async with tenant_session(session_maker, tenant.id) as session:
        return int(await session.scalar(select(func.count()).select_from(KnowledgeBase)) or 0)


async def documents_of(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, base_id: str
) -> list[KnowledgeDocument]:
    async with tenant_session(session_maker, tenant.id) as session:
        return list(await session.scalars(select(KnowledgeDocument).where(KnowledgeDocument.base_id == UUID(base_id))))


async def ready_for_portal(client: Client, upstream: MockUpstream, tenant: TenantRows, auth: AuthHeaders) -> None:
    """An embeddings model the organization serves, so that a base can be created."""
    await add_channel(client, auth(tenant.admin), upstream, "kb-embedder", models=[EMBEDDER])


async def create_base(client: Client, token: str, **fields: str) -> str:
    created = await client.post("/portal/knowledge", data={"csrf_token": token, **GOOD, **fields})
    assert created.status_code == 303, created.text
    found = re.fullmatch(r"/portal/knowledge/([0-9a-f-]{36})", created.headers["location"])
    assert found, created.headers["location"]
    return found[1]


async def upload(client: Client, token: str, base_id: str, name: str, content: bytes) -> Response:
    return await client.post(
        f"/portal/knowledge/{base_id}/documents",
        data={"csrf_token": token},
        files={"file": (name, content, "application/octet-stream")},
    )


async def test_the_new_base_form_names_each_wrong_field_and_saves_nothing(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    empty_list = await client.get("/portal/knowledge")
    # The fixture's organization base: everyone reads it, an end user does not change it.
    fixture_row = re.search(rf'<tr id="base-{tenant_a.kb_base.id}">(.*?)</tr>', empty_list.text, re.S)
    assert fixture_row
    assert "Organization" in fixture_row[1]
    assert ">read<" in fixture_row[1]
    assert f'<option value="{EMBEDDER}"' in empty_list.text
    # An end user may create their own base or a group's they manage, never the organization's.
    assert 'value="tenant"' not in empty_list.text

    blank = await client.post(
        "/portal/knowledge", data={"csrf_token": token, **GOOD, "name": "", "description": "x" * 2001}
    )
    assert blank.status_code == 400
    assert field_error(blank.text, "name") == "This field is required."
    assert field_error(blank.text, "description") == "At most 2000 characters."
    wrong = await client.post(
        "/portal/knowledge",
        data={"csrf_token": token, **GOOD, "name": "x" * 101, "chunk_tokens": "many", "chunk_overlap": "-1"},
    )
    assert wrong.status_code == 400
    assert field_error(wrong.text, "name") == "At most 100 characters."
    assert field_error(wrong.text, "chunk_tokens") == "Enter a whole number."
    assert field_error(wrong.text, "chunk_overlap") == "At least 0."
    assert 'value="many"' in wrong.text  # what was typed stays
    refusals = [
        ({"chunk_tokens": "100", "chunk_overlap": "51"}, 400, "chunk_overlap", "at most half"),
        ({"language": "klingon"}, 400, "language", "klingon"),
        ({"embedding_model": "no-such-model"}, 400, "embedding_model", "no-such-model"),
        ({"scope": "planet"}, 400, "scope", "not one of the choices"),
        ({"scope": "tenant"}, 403, "scope", "Only an administrator"),
        ({"scope": "group", "group_id": str(tenant_a.group.id)}, 403, "group_id", "group's admins"),
        ({"scope": "group", "group_id": "not-an-id"}, 400, "group_id", "Choose one"),
    ]
    for fields, status, field, said in refusals:
        response = await client.post("/portal/knowledge", data={"csrf_token": token, **GOOD, **fields})
        assert response.status_code == status, (fields, response.status_code)
        assert said in html.unescape(field_error(response.text, field) or ""), (fields, response.text)
    assert await base_count(session_maker, tenant_a) == 1

    base_id = await create_base(client, token, description="What the office runs on")
    listed = await client.get("/portal/knowledge")
    row = re.search(rf'<tr id="base-{base_id}">(.*?)</tr>', listed.text, re.S)
    assert row, listed.text
    assert "Handbook" in row[1]
    assert "Personal" in row[1]
    assert tenant_a.user.email.split("@")[0] in row[1]
    assert ">change<" in row[1]
    taken = await client.post("/portal/knowledge", data={"csrf_token": token, **GOOD})
    assert taken.status_code == 400
    assert "already has a knowledge base named" in (field_error(taken.text, "name") or "")
    assert await base_count(session_maker, tenant_a) == 2


async def test_an_upload_without_javascript_is_stored_once_and_refusals_sit_by_the_drop_zone(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    base_id = await create_base(client, token)
    page = await client.get(f"/portal/knowledge/{base_id}")
    assert 'enctype="multipart/form-data"' in page.text
    assert 'name="file"' in page.text
    assert "No documents yet" in page.text

    stored = await upload(client, token, base_id, "handbook.md", MARKDOWN)
    assert stored.status_code == 303
    shown = await client.get(stored.headers["location"])
    assert "The document is uploaded and queued for ingestion." in shown.text
    assert "handbook.md" in shown.text.replace("<wbr>", "")
    assert ">queued<" in shown.text
    # Queued documents: the list says it refreshes, and asks portal.js to.
    assert 'id="ingesting-hint"' in shown.text
    assert "data-refresh=" in shown.text
    again = await upload(client, token, base_id, "copy.md", MARKDOWN)
    assert again.status_code == 303
    assert "already in this base" in (await client.get(again.headers["location"])).text

    refusals = [
        ("tool.exe", b"MZ", 415, "not taken"),
        ("empty.md", b"", 400, "empty"),
        ("fake.pdf", b"hello", 415, "not that of a .pdf"),
        ("big.txt", b"a" * (settings.kb_max_upload_bytes + 1), 413, "larger than"),
    ]
    for name, content, status, said in refusals:
        response = await upload(client, token, base_id, name, content)
        assert response.status_code == status, (name, response.status_code)
        assert said in (field_error(response.text, "file") or ""), (name, response.text[:2000])
    # Past the route's body limit the body is refused before it is read: the portal's error page, no 500.
    far_over = await upload(client, token, base_id, "huge.txt", b"a" * (settings.kb_max_upload_bytes + 1024 * 1024))
    assert far_over.status_code == 413
    missing = await client.post(f"/portal/knowledge/{base_id}/documents", data={"csrf_token": token})
    assert field_error(missing.text, "file") == "Choose a file to upload."
    without_token = await client.post(
        f"/portal/knowledge/{base_id}/documents", files={"file": ("other.md", b"# Other\n", "text/markdown")}
    )
    assert without_token.status_code == 403

    documents = await documents_of(session_maker, tenant_a, base_id)
    assert [(document.filename, document.content_hash) for document in documents] == [
        ("handbook.md", hashlib.sha256(MARKDOWN).hexdigest())
    ]
    files = list((settings.storage_path / "tenants" / str(tenant_a.id) / "kb" / base_id).rglob("*.*"))
    assert [path.read_bytes() for path in files] == [MARKDOWN]


async def test_a_document_page_previews_its_passages_and_deletions_are_confirmed_first(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    base_id = await create_base(client, token)
    await upload(client, token, base_id, "handbook.md", MARKDOWN)
    (document,) = await documents_of(session_maker, tenant_a, base_id)
    document_page = f"/portal/knowledge/{base_id}/documents/{document.id}"
    waiting = await client.get(document_page)
    assert "No passages yet: the document is waiting for ingestion." in waiting.text
    assert 'id="document-live" data-refresh=' in waiting.text

    # What the ingestion job writes: passages, and the document ready (or failed, with its reason).
    async with tenant_session(session_maker, tenant_a.id) as session:
        for position, passage in enumerate(["The office opens at nine.", "It closes at <five>."]):
            session.add(
                KnowledgeChunk(
                    base_id=UUID(base_id),
                    document_id=document.id,
                    level="passage",
                    position=position,
                    page=None,
                    section="Handbook",
                    start_offset=position * 30,
                    end_offset=position * 30 + len(passage),
                    text=passage,
                    token_count=6,
                    content_hash=hashlib.sha256(passage.encode()).hexdigest(),
                    language=text("'english'::regconfig"),
                )
            )
        await session.execute(
            update(KnowledgeDocument).where(KnowledgeDocument.id == document.id).values(status="ready", chunk_count=2)
        )
        await session.commit()
    ready = await client.get(document_page)
    passages = re.findall(r"<blockquote>(.*?)</blockquote>", ready.text, re.S)
    assert passages == ["The office opens at nine.", "It closes at &lt;five&gt;."]
    assert "Handbook" in ready.text
    assert "data-refresh" not in ready.text

    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == document.id)
            .values(status="failed", error="No text found: the PDF may be scanned images.")
        )
        await session.commit()
    listed = await client.get(f"/portal/knowledge/{base_id}")
    assert ">failed<" in listed.text
    assert "No text found: the PDF may be scanned images." in listed.text

    confirm = await client.get(f"{document_page}/delete")
    assert "Delete handbook.md?" in confirm.text.replace("<wbr>", "")
    assert "2 passages" in confirm.text
    assert await documents_of(session_maker, tenant_a, base_id)  # asking is not deleting
    deleted = await client.post(f"{document_page}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert await documents_of(session_maker, tenant_a, base_id) == []
    async with tenant_session(session_maker, tenant_a.id) as session:
        chunks = select(func.count()).select_from(KnowledgeChunk).where(KnowledgeChunk.base_id == UUID(base_id))
        assert await session.scalar(chunks) == 0
    base_files = settings.storage_path / "tenants" / str(tenant_a.id) / "kb" / base_id
    assert not list(base_files.rglob("*.*"))

    await upload(client, token, base_id, "again.md", MARKDOWN)
    confirm_base = await client.get(f"/portal/knowledge/{base_id}/delete")
    assert "its 1 document," in confirm_base.text
    gone = await client.post(f"/portal/knowledge/{base_id}/delete", data={"csrf_token": token})
    assert gone.status_code == 303
    assert gone.headers["location"] == "/portal/knowledge"
    assert await base_count(session_maker, tenant_a) == 1
    assert await documents_of(session_maker, tenant_a, base_id) == []
    assert not list(base_files.rglob("*.*"))


async def test_a_base_out_of_reach_is_not_found_and_a_reader_cannot_change_one(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    admin_token = await sign_in(client, tenant_a, tenant_a.admin.email)
    assert 'value="tenant"' in (await client.get("/portal/knowledge")).text
    private = await create_base(client, admin_token, name="Admin notes")
    await upload(client, admin_token, private, "notes.md", MARKDOWN)
    shared = await create_base(client, admin_token, name="Everyone's", scope="tenant")
    (document,) = await documents_of(session_maker, tenant_a, private)

    client.cookies.clear()
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    listed = await client.get("/portal/knowledge")
    assert "Everyone&#39;s" in listed.text
    assert "Admin notes" not in listed.text
    for path in (
        f"/portal/knowledge/{private}",
        f"/portal/knowledge/{private}/delete",
        f"/portal/knowledge/{private}/documents/{document.id}",
        f"/portal/knowledge/{private}/documents/{document.id}/delete",
    ):
        assert (await client.get(path)).status_code == 404, path
    for path in (
        f"/portal/knowledge/{private}",
        f"/portal/knowledge/{private}/delete",
        f"/portal/knowledge/{private}/documents/{document.id}/delete",
    ):
        assert (await client.post(path, data={"csrf_token": token, **GOOD})).status_code == 404, path
    assert (await upload(client, token, private, "mine.md", b"# Mine\n")).status_code == 404

    # The organization's base: readable by everyone, changed by administrators only.
    reader_page = await client.get(f"/portal/knowledge/{shared}")
    assert reader_page.status_code == 200
    assert 'id="upload-form"' not in reader_page.text
    assert 'id="base-settings"' not in reader_page.text
    assert "you can read it, not change it" in reader_page.text
    refused = await client.post(f"/portal/knowledge/{shared}", data={"csrf_token": token, **GOOD, "name": "Mine"})
    assert refused.status_code == 403
    assert (await upload(client, token, shared, "mine.md", b"# Mine\n")).status_code == 403
    assert (await client.post(f"/portal/knowledge/{shared}/delete", data={"csrf_token": token})).status_code == 403
    assert await base_count(session_maker, tenant_a) == 3
    assert await documents_of(session_maker, tenant_a, shared) == []


async def test_the_settings_form_keeps_what_was_typed_on_a_refusal_and_saves_a_good_change(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    await ready_for_portal(client, upstream, tenant_a, auth_headers)
    token = await sign_in(client, tenant_a, tenant_a.user.email)
    base_id = await create_base(client, token, description="Old")
    settings_form = {"csrf_token": token, **GOOD}
    refused = await client.post(
        f"/portal/knowledge/{base_id}", data=settings_form | {"name": "Renamed", "chunk_overlap": "300"}
    )
    assert refused.status_code == 400
    assert "at most half" in (field_error(refused.text, "chunk_overlap") or "")
    assert 'value="Renamed"' in refused.text
    saved = await client.post(
        f"/portal/knowledge/{base_id}", data=settings_form | {"name": "Renamed", "chunk_tokens": "200"}
    )
    assert saved.status_code == 303
    assert "settings are saved" in (await client.get(saved.headers["location"])).text
    async with tenant_session(session_maker, tenant_a.id) as session:
        base = await session.get(KnowledgeBase, UUID(base_id))
        assert base is not None
        assert (base.name, base.chunk_tokens, base.chunk_overlap, base.description) == ("Renamed", 200, 60, None)
