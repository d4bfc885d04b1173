"""Knowledge bases over HTTP: settings checked field by field, uploads into the object store, who reaches what."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from db.auth import User
from db.knowledge import KnowledgeChunk, KnowledgeDocument
from db.session import tenant_session
from db.tenant import UserGroupMember
from tests.support.clients import AuthHeaders, Client
from tests.support.gateway import add_channel
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows, audit_actions

BASES = "/api/knowledge-bases"
EMBEDDER = "text-embedding-test"
MARKDOWN = b"# Handbook\n\nThe office opens at nine.\n"
TEXT = b"Holidays are booked in the portal.\n"
# A one-page PDF written by hand: header, catalog, pages, page, content stream, cross-reference table.
PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >> endobj\n"
    b"4 0 obj << /Length 44 >> stream\nBT /F1 12 Tf 20 100 Td (Parking is free) Tj ET\nendstream endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)


async def embeddings_channel(client: Client, admin: dict[str, str], upstream: MockUpstream, name: str) -> None:
    await add_channel(client, admin, upstream, name, models=[EMBEDDER])


async def create_base(client: Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post(
        BASES, json={"name": "Handbook", "embedding_model": EMBEDDER, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def upload(
    client: Client,
    headers: dict[str, str],
    base_id: str,
    name: str,
    content: bytes,
    kind: str = "text/plain",
    **form: str,
) -> Any:
    return await client.post(
        f"{BASES}/{base_id}/documents", files={"file": (name, content, kind)}, data=form, headers=headers
    )


async def add_user(session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, name: str) -> User:
    async with tenant_session(session_maker, tenant.id) as session:
        user = User(email=f"{name}@{tenant.slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="end_user")
        session.add(user)
        await session.commit()
        return user


async def join(
    session_maker: async_sessionmaker[AsyncSession], tenant: TenantRows, user: User, role: str = "member"
) -> None:
    async with tenant_session(session_maker, tenant.id) as session:
        session.add(UserGroupMember(group_id=tenant.group.id, user_id=user.id, role=role))
        await session.commit()


def stored_file(settings: Settings, tenant: TenantRows, key: str) -> Path:
    return settings.storage_path / "tenants" / str(tenant.id) / key


async def test_bad_settings_are_refused_naming_the_field(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await embeddings_channel(client, admin, upstream, "kb-embedder")
    good = {"name": "Handbook", "embedding_model": EMBEDDER}
    before = (await client.get(BASES, headers=admin)).json()
    refusals = [
        ({**good, "name": ""}, user, 400, "name"),
        ({**good, "name": "   "}, user, 400, "name"),
        ({**good, "name": "x" * 101}, user, 400, "name"),
        ({**good, "embedding_model": "no-such-model"}, user, 400, "embedding_model"),
        ({**good, "chunk_tokens": 100, "chunk_overlap": 51}, user, 400, "chunk_overlap"),
        ({**good, "chunk_tokens": 63}, user, 400, "chunk_tokens"),
        ({**good, "chunk_tokens": 2001}, user, 400, "chunk_tokens"),
        ({**good, "language": "klingon"}, user, 400, "language"),
        ({**good, "language": "English!"}, user, 400, "language"),
        ({**good, "scope": "planet"}, user, 400, "scope"),
        ({**good, "scope": "group"}, admin, 400, "group_id"),
        (
            {**good, "scope": "group", "group_id": str(tenant_a.group.id), "owner_user_id": str(tenant_a.user.id)},
            admin,
            400,
            "owner_user_id",
        ),
        ({**good, "scope": "group", "group_id": str(tenant_a.user.id)}, admin, 400, "group_id"),
        ({**good, "scope": "user", "group_id": str(tenant_a.group.id)}, user, 400, "group_id"),
        ({**good, "scope": "tenant", "owner_user_id": str(tenant_a.user.id)}, admin, 400, "owner_user_id"),
        ({**good, "scope": "tenant"}, user, 403, "scope"),
        ({**good, "scope": "group", "group_id": str(tenant_a.group.id)}, user, 403, "group_id"),
        ({**good, "owner_user_id": str(tenant_a.admin.id)}, user, 403, "owner_user_id"),
        ({**good, "owner_user_id": str(tenant_a.group.id)}, admin, 400, "owner_user_id"),
        ({**good, "color": "red"}, user, 400, "color"),
    ]
    for body, headers, status, field in refusals:
        response = await client.post(BASES, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert field in response.text, (body, response.text)
    assert (await client.get(BASES, headers=admin)).json() == before

    base = await create_base(client, user, description="Where things are")
    assert base["scope"] == "user"
    assert base["owner_user_id"] == str(tenant_a.user.id)
    assert (base["chunk_tokens"], base["chunk_overlap"], base["language"], base["writable"]) == (
        400,
        60,
        "english",
        True,
    )
    duplicate = await client.post(BASES, json=good, headers=user)
    assert duplicate.status_code == 400
    assert "name" in duplicate.text
    # The same name is free for another owner.
    assert (await create_base(client, admin))["owner_user_id"] == str(tenant_a.admin.id)

    path = f"{BASES}/{base['id']}"
    for body, field in (
        ({"chunk_overlap": 201}, "chunk_overlap"),
        ({"chunk_tokens": 60}, "chunk_tokens"),
        ({"embedding_model": "gone"}, "embedding_model"),
        ({"language": "klingon"}, "language"),
        ({"name": " "}, "name"),
        ({"scope": "tenant"}, "scope"),
    ):
        response = await client.patch(path, json=body, headers=user)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)
    changed = await client.patch(path, json={"name": "Guide", "language": "french", "chunk_tokens": 800}, headers=user)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["language"], changed.json()["chunk_tokens"]) == (
        "Guide",
        "french",
        800,
    )
    assert (await client.get(path, headers=user)).json()["name"] == "Guide"
    assert (await client.delete(path, headers=user)).status_code == 204
    assert (await client.get(path, headers=user)).status_code == 404
    assert [
        action for action in await audit_actions(session_maker, tenant_a.id) if action.startswith("knowledge.")
    ] == [
        "knowledge.base_created",
        "knowledge.base_created",
        "knowledge.base_updated",
        "knowledge.base_deleted",
    ]


async def test_uploads_are_stored_under_the_tenant_once_and_deleted_with_their_chunks(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await embeddings_channel(client, admin, upstream, "kb-embedder")
    base = await create_base(client, user)
    documents = {}
    for name, content, kind, expected in (
        ("hand book.md", MARKDOWN, "text/markdown", "text/markdown"),
        ("notes.txt", TEXT, "application/octet-stream", "text/plain"),
        ("../../parking.pdf", PDF, "application/pdf", "application/pdf"),
    ):
        response = await upload(client, user, base["id"], name, content, kind, metadata='{"team": "ops"}')
        assert response.status_code == 201, response.text
        document = response.json()
        assert (document["status"], document["duplicate"], document["content_type"]) == ("queued", False, expected)
        assert document["content_hash"] == hashlib.sha256(content).hexdigest()
        assert document["size_bytes"] == len(content)
        assert document["metadata"] == {"team": "ops"}
        documents[name] = document
    assert documents["../../parking.pdf"]["filename"] == "parking.pdf"

    async with tenant_session(session_maker, tenant_a.id) as session:
        rows = {
            row.id: row
            for row in await session.scalars(
                select(KnowledgeDocument).where(KnowledgeDocument.base_id == UUID(base["id"]))
            )
        }
    keys = {str(row_id): row.object_key for row_id, row in rows.items()}
    markdown = documents["hand book.md"]
    assert keys[markdown["id"]] == f"kb/{base['id']}/{markdown['id']}/hand_book.md"
    for document in documents.values():
        assert keys[document["id"]].startswith(f"kb/{base['id']}/{document['id']}/")
        assert stored_file(settings, tenant_a, keys[document["id"]]).is_file()

    # The same content again, under any name: the document already there, nothing stored twice.
    again = await upload(client, user, base["id"], "copy.md", MARKDOWN, "text/markdown")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == markdown["id"]
    listed = (await client.get(f"{BASES}/{base['id']}/documents", headers=user)).json()
    assert sorted(document["id"] for document in listed) == sorted(document["id"] for document in documents.values())
    assert {document["status"] for document in listed} == {"queued"}
    assert {d["chunk_count"] for d in listed} == {0}
    assert len(list((settings.storage_path / "tenants" / str(tenant_a.id) / "kb" / base["id"]).iterdir())) == 3

    # Chunks a later ingestion wrote go with their document, and so does its file.
    async with tenant_session(session_maker, tenant_a.id) as session:
        session.add(
            KnowledgeChunk(
                base_id=UUID(base["id"]),
                document_id=UUID(markdown["id"]),
                level="passage",
                position=0,
                start_offset=0,
                end_offset=10,
                text="The office opens at nine.",
                token_count=6,
                content_hash="0" * 64,
                language="english",
            )
        )
        await session.commit()
    document_path = f"{BASES}/{base['id']}/documents/{markdown['id']}"
    assert (await client.get(document_path, headers=user)).json()["filename"] == "hand book.md"
    assert (await client.delete(document_path, headers=user)).status_code == 204
    assert (await client.get(document_path, headers=user)).status_code == 404
    assert not stored_file(settings, tenant_a, keys[markdown["id"]]).exists()
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).select_from(KnowledgeChunk)) == 0
        assert await session.scalar(select(func.count()).where(KnowledgeDocument.base_id == UUID(base["id"]))) == 2

    # Deleting the base takes the remaining documents and every file under it.
    assert (await client.delete(f"{BASES}/{base['id']}", headers=user)).status_code == 204
    base_directory = settings.storage_path / "tenants" / str(tenant_a.id) / "kb" / base["id"]
    assert not [path for path in base_directory.rglob("*") if path.is_file()]
    async with tenant_session(session_maker, tenant_a.id) as session:
        assert await session.scalar(select(func.count()).where(KnowledgeDocument.base_id == UUID(base["id"]))) == 0
    actions = [action for action in await audit_actions(session_maker, tenant_a.id) if action.startswith("knowledge.")]
    assert actions.count("knowledge.document_added") == 3
    assert actions.count("knowledge.document_deleted") == 1
    assert actions[-1] == "knowledge.base_deleted"


async def test_uploads_of_the_wrong_kind_or_size_are_refused_and_nothing_is_stored(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    settings: Settings,
) -> None:
    admin, user = auth_headers(tenant_a.admin), auth_headers(tenant_a.user)
    await embeddings_channel(client, admin, upstream, "kb-embedder")
    base = await create_base(client, user)
    for name, content, status in (
        ("tool.exe", b"MZ\x90\x00", 415),
        ("noextension", TEXT, 415),
        ("fake.pdf", b"just words", 415),
        ("fake.txt", PDF, 415),
        ("fake.docx", b"PK\x03\x04 not really a zip", 415),
        ("binary.txt", b"a\x00b", 415),
        ("latin1.md", "caf\u00e9".encode("latin-1"), 415),
        ("page.html", b"no markup at all", 415),
        ("empty.txt", b"", 400),
    ):
        response = await upload(client, user, base["id"], name, content)
        assert response.status_code == status, (name, response.text)
        assert "file" in response.json()["detail"], (name, response.text)
    for form, field in (({"metadata": "[1, 2]"}, "metadata"), ({"metadata": "{"}, "metadata")):
        response = await upload(client, user, base["id"], "notes.txt", TEXT, **form)
        assert response.status_code == 400, response.text
        assert field in response.json()["detail"], response.text
    missing = await client.post(f"{BASES}/{base['id']}/documents", data={"other": "x"}, headers=user)
    assert missing.status_code == 400
    assert "file" in missing.text

    limit = settings.kb_max_upload_bytes
    just_over = await upload(client, user, base["id"], "big.txt", b"a" * (limit + 1))
    assert just_over.status_code == 413
    assert "file" in just_over.text
    far_over = await upload(client, user, base["id"], "huge.txt", b"a" * (limit + 1024 * 1024))
    assert far_over.status_code == 413
    assert (await client.get(f"{BASES}/{base['id']}/documents", headers=user)).json() == []
    assert not (settings.storage_path / "tenants" / str(tenant_a.id) / "kb").exists()


async def test_who_reads_and_who_changes_follows_the_scope(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    tenant_b: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = auth_headers(tenant_a.admin)
    await embeddings_channel(client, admin, upstream, "kb-embedder")
    member, manager, outsider = [
        await add_user(session_maker, tenant_a, name) for name in ("member", "manager", "outsider")
    ]
    await join(session_maker, tenant_a, member)
    await join(session_maker, tenant_a, manager, role="admin")
    as_member, as_manager, as_outsider = (auth_headers(user) for user in (member, manager, outsider))

    group_base = await create_base(client, as_manager, name="Team", scope="group", group_id=str(tenant_a.group.id))
    personal = await create_base(client, as_outsider, name="Mine")
    shared = await create_base(client, admin, name="Everyone", scope="tenant")
    group_path, personal_path, shared_path = (f"{BASES}/{base['id']}" for base in (group_base, personal, shared))
    assert (await upload(client, as_manager, group_base["id"], "notes.txt", TEXT)).status_code == 201

    # The fixture tenant's own base, "Handbook", is the whole organization's.
    def names(response: Any) -> set[str]:
        return {base["name"] for base in response.json()}

    assert names(await client.get(BASES, headers=as_member)) == {"Team", "Everyone", "Handbook"}
    assert names(await client.get(BASES, headers=as_outsider)) == {"Mine", "Everyone", "Handbook"}
    assert names(await client.get(BASES, headers=admin)) == {"Team", "Mine", "Everyone", "Handbook"}
    theirs = {base["id"] for base in (await client.get(BASES, headers=auth_headers(tenant_b.admin))).json()}
    assert theirs == {str(tenant_b.kb_base.id)}

    # Outside the group, the group's base does not exist; inside, a member reads but does not change it.
    for path in (group_path, f"{group_path}/documents"):
        assert (await client.get(path, headers=as_outsider)).status_code == 404
        assert (await client.get(path, headers=as_member)).status_code == 200
    assert (await client.patch(group_path, json={"name": "Taken"}, headers=as_outsider)).status_code == 404
    assert (await upload(client, as_outsider, group_base["id"], "x.txt", b"outsider")).status_code == 404
    member_view = (await client.get(group_path, headers=as_member)).json()
    assert member_view["writable"] is False
    assert (await client.patch(group_path, json={"name": "Taken"}, headers=as_member)).status_code == 403
    assert (await upload(client, as_member, group_base["id"], "x.txt", b"member")).status_code == 403
    assert (await client.delete(group_path, headers=as_member)).status_code == 403
    assert (await client.get(group_path, headers=as_manager)).json()["writable"] is True

    # A user's base is its owner's (and the admins'); the tenant's base is read by all, changed by admins.
    assert (await client.get(personal_path, headers=as_member)).status_code == 404
    assert (await client.delete(personal_path, headers=as_member)).status_code == 404
    assert (await client.get(personal_path, headers=admin)).json()["writable"] is True
    assert (await client.get(shared_path, headers=as_member)).json()["writable"] is False
    assert (await client.patch(shared_path, json={"description": "x"}, headers=as_member)).status_code == 403
    assert (await client.patch(shared_path, json={"description": "For all"}, headers=admin)).status_code == 200

    # Another tenant, even its admin, finds none of them.
    for path in (group_path, personal_path, shared_path):
        assert (await client.get(path, headers=auth_headers(tenant_b.admin))).status_code == 404
        assert (await client.delete(path, headers=auth_headers(tenant_b.admin))).status_code == 404
    assert (await client.get(group_path, headers=as_member)).json()["name"] == "Team"
