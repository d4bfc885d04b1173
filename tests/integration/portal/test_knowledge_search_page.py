"""The search box on a knowledge base's page: results with their document, place, marked words and score; a
result's link landing on its passage even past the preview; refusals next to the box; escaping; who reaches it."""

from __future__ import annotations

import html
import re

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.gateway.client import CHAT_TOKEN_NAME
from db.provider import ApiToken
from db.session import tenant_session
from tests.integration.knowledge.test_search import OPENS, PARKING, add_document, embedder, handbook
from tests.support.clients import AuthHeaders, Client
from tests.support.mock_upstream import MockUpstream
from tests.support.portal import field_error, sign_in
from tests.support.tenants import TenantRows


def results(page: str) -> list[str]:
    """The result items of a page, in order."""
    return re.findall(r'<li id="result-[0-9a-f-]{36}">(.*?)</li>', page, re.S)


async def test_a_query_lists_the_matching_passage_first_with_its_document_place_marked_words_and_score(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    base_id, office, _ = await handbook(client, session_maker, tenant_a, key, auth_headers(tenant_a.user))
    await sign_in(client, tenant_a, tenant_a.user.email)

    blank = await client.get(f"/portal/knowledge/{base_id}")
    assert blank.status_code == 200
    assert 'id="search"' in blank.text
    assert 'id="search-results"' not in blank.text
    # No rerank model in the organization's memory settings: no box to tick, a hint instead.
    assert 'id="rerank"' not in blank.text
    assert 'id="rerank-unavailable"' in blank.text

    found = await client.get(f"/portal/knowledge/{base_id}", params={"q": "When does the office open?"})
    assert found.status_code == 200, found.text
    items = results(found.text)
    assert len(items) == 4
    first = items[0]
    chunk = re.search(r"\?chunk=([0-9a-f-]{36})#chunk-\1", first)
    assert chunk, first
    assert f'href="/portal/knowledge/{base_id}/documents/{office}?chunk={chunk[1]}#chunk-{chunk[1]}"' in first
    assert ">office.md</a>" in first.replace("<wbr>", "")
    assert "page 1 · Handbook · score 0." in first
    assert "<mark>The</mark> <mark>office</mark> <mark>opens</mark> at nine every weekday morning." in first
    assert 'value="When does the office open?"' in found.text

    # The link lands on the passage: its anchor is on the document's page.
    document = await client.get(f"/portal/knowledge/{base_id}/documents/{office}", params={"chunk": chunk[1]})
    assert document.status_code == 200
    assert f'<li id="chunk-{chunk[1]}">' in document.text
    assert OPENS in document.text

    # By words only, a passage without any of them is not listed.
    by_words = await client.get(f"/portal/knowledge/{base_id}", params={"q": "garage", "mode": "text"})
    [only] = results(by_words.text)
    assert "Parking is free in the underground <mark>garage</mark> for staff." in only
    assert 'value="text" selected' in by_words.text
    nothing = await client.get(f"/portal/knowledge/{base_id}", params={"q": "zeppelin", "mode": "text"})
    assert 'id="search-empty"' in nothing.text
    assert PARKING not in nothing.text


async def test_a_passage_past_the_preview_is_shown_by_its_anchor(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)
    passages = [f"Rule number {number} of the long handbook." for number in range(24)]
    passages[-1] = "The fire exit is behind the kitchen."
    long_document, ids = await add_document(client, session_maker, tenant_a, key, base_id, "long.txt", passages)
    await sign_in(client, tenant_a, tenant_a.user.email)

    found = await client.get(f"/portal/knowledge/{base_id}", params={"q": "fire exit", "mode": "text"})
    assert f"?chunk={ids[-1]}#chunk-{ids[-1]}" in results(found.text)[0]
    url = f"/portal/knowledge/{base_id}/documents/{long_document}"
    # The preview stops at 20 passages; the one followed is shown after it.
    assert f'id="chunk-{ids[-1]}"' not in (await client.get(url)).text
    followed = await client.get(url, params={"chunk": str(ids[-1])})
    assert f'<li id="chunk-{ids[-1]}">' in followed.text
    assert 'id="shown-chunk" start="24"' in followed.text
    # A passage of the preview is not shown twice; an id of another document shows nothing more.
    assert followed.text.count(f'id="chunk-{ids[0]}"') == 1
    assert (await client.get(url, params={"chunk": str(ids[0])})).text.count(f'id="chunk-{ids[0]}"') == 1
    other = await client.get(url, params={"chunk": "00000000-0000-0000-0000-000000000000"})
    assert (other.status_code, 'id="shown-chunk"' in other.text) == (200, False)
    assert (await client.get(url, params={"chunk": "not-an-id"})).status_code == 400


async def test_refusals_are_said_next_to_the_box(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, auth_headers(tenant_a.user))
    await sign_in(client, tenant_a, tenant_a.user.email)
    base = f"/portal/knowledge/{base_id}"

    empty = await client.get(base, params={"q": "   "})
    assert empty.status_code == 400
    assert field_error(empty.text, "q") == "This field is required."
    assert 'id="search-results"' not in empty.text
    too_long = await client.get(base, params={"q": "word " * 500})
    assert (too_long.status_code, field_error(too_long.text, "q")) == (400, "At most 2000 characters.")
    wrong_mode = await client.get(base, params={"q": "office", "mode": "telepathy"})
    assert (wrong_mode.status_code, html.unescape(field_error(wrong_mode.text, "mode") or "")) == (
        400,
        "'telepathy' is not one of the choices.",
    )
    # Reranking asked for by hand without a rerank model: said under the option, not a server error.
    rerank = await client.get(base, params={"q": "office", "rerank": "1"})
    assert rerank.status_code == 400
    assert "rerank model" in html.unescape(field_error(rerank.text, "rerank") or "")

    # The gateway refuses the searcher's key (made by their first search) the embedding model: its message above
    # the box.
    assert (await client.get(base, params={"q": "office"})).status_code == 200
    async with tenant_session(session_maker, tenant_a.id) as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == tenant_a.user.id, ApiToken.name == CHAT_TOKEN_NAME)
            .values(allowed_models=["gpt-test"])
        )
        await session.commit()
    refused = await client.get(base, params={"q": "a new question"})
    assert refused.status_code == 403, refused.text
    alert = re.search(
        r'<form method="get"[^>]*id="search".*?<p class="notice error" role="alert">([^<]*)</p>', refused.text, re.S
    )
    assert alert
    assert "text-embedding-test" in html.unescape(alert[1])
    # The documents are still listed under it.
    assert 'id="documents-table"' in refused.text


async def test_another_user_s_base_is_not_found(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, auth_headers(tenant_a.admin))
    await sign_in(client, tenant_a, tenant_a.user.email)
    response = await client.get(f"/portal/knowledge/{base_id}", params={"q": "office"})
    assert response.status_code == 404
    assert "office.md" not in response.text


async def test_a_passage_and_a_query_holding_markup_are_shown_as_text(
    client: Client,
    upstream: MockUpstream,
    tenant_a: TenantRows,
    auth_headers: AuthHeaders,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = await embedder(client, tenant_a, upstream, auth_headers)
    user = auth_headers(tenant_a.user)
    base_id, _, _ = await handbook(client, session_maker, tenant_a, key, user)
    hostile = 'The alarm <script>alert("alarm")</script> rings at <b>noon</b>.'
    await add_document(client, session_maker, tenant_a, key, base_id, "<img src=x>.txt", [hostile])
    await sign_in(client, tenant_a, tenant_a.user.email)

    found = await client.get(f"/portal/knowledge/{base_id}", params={"q": "alarm <b>"})
    assert found.status_code == 200
    assert "<script>alert" not in found.text
    assert "<b>noon" not in found.text
    assert "<img src=x>" not in found.text
    [item] = [item for item in results(found.text) if "alarm" in item]
    assert "The <mark>alarm</mark> &lt;script&gt;alert(&#34;<mark>alarm</mark>&#34;)&lt;/script&gt;" in item
    assert "&lt;b&gt;noon&lt;/b&gt;." in item
    assert "&lt;img src=x&gt;.txt</a>" in item.replace("<wbr>", "")
    assert 'value="alarm &lt;b&gt;"' in found.text
