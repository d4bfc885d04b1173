"""Schemathesis over the whole OpenAPI schema of a running Lyss, as an admin, an end user and anonymously: no 5xx."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from sqlalchemy.ext.asyncio import AsyncEngine
from uuid_utils.compat import uuid7

from app.encryption import SecretBox
from db.auth import User
from db.bootstrap import DatabaseUrls
from db.chat import Conversation
from db.memory import Memory
from db.provider import StoredResponse
from db.session import create_session_maker, tenant_session
from db.tenant import Job
from tests.support.commands import RunningLyss, serve_lyss
from tests.support.json_paths import JsonPath, leaves, replaced
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import create_tenant_rows

pytestmark = pytest.mark.fuzz

# Fixed, so that a run is reproducible: each operation derives its own seed from this one and its label.
SEED = 20261122
# Generated requests per operation, on top of the coverage phase's deterministic boundary cases (about 2,900
# requests per identity). Anonymous requests mostly end at the authentication middleware: they get fewer
# generated requests and no coverage phase.
EXAMPLES = {"admin": 40, "end_user": 25, "anonymous": 15}
# Seconds; nothing in the API takes this long unless it hangs.
REQUEST_TIMEOUT = 20
# What reached PostgreSQL and answered 500 before: NUL characters in text, integers beyond INTEGER and BIGINT.
EDGE_INTEGERS = [2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**30]

Hook = Callable[[schemathesis.HookContext, Any], st.SearchStrategy[Any]]
ApiCase = schemathesis.Case[Any]


def config_for(identity: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # A slow shared machine and a real server: Hypothesis' timing checks would only fail the run.
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            # A failing example is reported as found: shrinking against a live server costs minutes.
            "generation": {"max-examples": EXAMPLES[identity], "no-shrink": True, "database": "none"},
            "phases": {"coverage": {"enabled": identity != "anonymous"}},
            # Reproductions show the ids and the token actually sent (a test server's, minted for the run).
            "output": {"sanitization": {"enabled": False}},
        }
    )


class FuzzIdentity(msgspec.Struct):
    """Whom the requests act as (None: nobody), its API key for /v1 and real ids of its tenant to put in parameters."""

    name: str
    user: User | None
    api_key: str | None
    real_values: dict[str, list[str]]


@pytest.fixture(scope="module")
def fuzz_server(
    database: DatabaseUrls, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningLyss]:
    log_dir = tmp_path_factory.mktemp("fuzz")
    # The sign-in rate limit would answer 429 before the login handler sees most generated bodies.
    with serve_lyss(
        database, redis_url, log_dir, LYSS_LOGIN_IP_LIMIT_PER_MINUTE="1000000", LYSS_DATA_DIR=str(log_dir / "data")
    ) as server:
        yield server


@pytest.fixture(scope="module", params=["admin", "end_user", "anonymous"])
async def fuzz_identity(
    request: pytest.FixtureRequest, fuzz_server: RunningLyss, app_engine: AsyncEngine, _upstream_server: MockUpstream
) -> FuzzIdentity:
    """A fresh tenant per identity, so that what one pass deletes or changes does not blind the next."""
    session_maker = create_session_maker(app_engine)
    tenant = await create_tenant_rows(
        session_maker, f"fuzz-{secrets.token_hex(3)}", SecretBox(fuzz_server.settings.encryption_keyring)
    )
    acting = tenant.user if request.param == "end_user" else tenant.admin
    # The fixture rows belong to one user each; the acting user gets its own of each kind.
    conversation = Conversation(user_id=acting.id, title="Fuzzed", model="gpt-test")
    memory = Memory(user_id=acting.id, memory_text="Likes coffee", memory_hash=secrets.token_hex(32))
    # Finished, so that following its events ends at once instead of polling for an hour.
    job = Job(kind="fixture.finished", status="succeeded", progress=100, created_by=acting.id)
    async with tenant_session(session_maker, tenant.id) as session:
        session.add_all([conversation, memory, job])
        await session.commit()
    async with httpx.AsyncClient(base_url=fuzz_server.url) as client:
        admin = fuzz_server.headers_for(tenant.admin)
        # Two channels: the fuzzer gets the id of the first, and may break its URL or disable it; chat goes through
        # the second, whose id it never sees, so that a 502 from chat means a bug rather than a broken channel.
        channels = []
        for name, models in (("fuzzed", ["fuzzed-model"]), ("chat", ["gpt-test", "embed-test"])):
            body = {"name": name, "type": "openai-compatible", "models": models, "keys": [f"key-of-{name}"],
                    "base_url": _upstream_server.base_url(name)}  # fmt: skip
            channel = await client.post("/api/channels", json=body, headers=admin)
            assert channel.status_code == 201, channel.text
            channels.append(channel.json())
        price = await client.put(
            "/api/model-prices/gpt-test", json={"prompt_price": 1, "completion_price": 2}, headers=admin
        )
        assert price.status_code == 200, price.text
        key = await client.post("/api/tokens", json={"name": "fuzz"}, headers=fuzz_server.headers_for(acting))
        assert key.status_code == 201, key.text
        # The key /v1 calls use: the fuzzer never sees its id, so it cannot disable or revoke it on the way.
        gateway_key = await client.post(
            "/api/tokens", json={"name": "fuzz /v1"}, headers=fuzz_server.headers_for(acting)
        )
        assert gateway_key.status_code == 201, gateway_key.text
        attachment = await client.post(
            f"/api/conversations/{conversation.id}/attachments",
            files={"file": ("notes.txt", b"some notes", "text/plain")},
            headers=fuzz_server.headers_for(acting),
        )
        assert attachment.status_code == 201, attachment.text
    # A response stored by the /v1 key, so that reading, listing and deleting it get past their 404.
    stored = StoredResponse(
        response_id=f"resp_{secrets.token_hex(16)}",
        token_id=UUID(gateway_key.json()["token"]["id"]),
        user_id=acting.id,
        model="gpt-test",
        input_items=[{"id": "msg_fuzz", "type": "message", "role": "user", "content": []}],
        response={"id": "", "object": "response", "output": []},
        expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
    )
    async with tenant_session(session_maker, tenant.id) as session:
        session.add(stored)
        await session.commit()
    real_values = {
        "conversation_id": [str(conversation.id)],
        "attachment_id": [attachment.json()["id"]],
        "memory_id": [str(memory.id)],
        "job_id": [str(job.id)],
        "channel_id": [channels[0]["id"]],
        "token_id": [key.json()["token"]["id"]],
        "provider_id": [str(tenant.oauth_provider.id)],
        "webhook_id": [str(tenant.webhook.id)],
        "model": ["gpt-test", "embed-test"],
        "response_id": [stored.response_id],
        "after": ["msg_fuzz"],
        "before": ["msg_fuzz"],
        "tenant_slug": [tenant.slug],
        "provider_name": [tenant.oauth_provider.provider_name],
        "user_id": [str(tenant.admin.id), str(tenant.user.id)],
        # Body fields that name something the server looks up.
        "kind": ["usage.export", "memory.export", "memory.reembed", "gateway.test_channels"],
        "provider": [tenant.oauth_provider.provider_name],
        "type": ["openai-compatible", "anthropic"],
    }
    anonymous = request.param == "anonymous"
    return FuzzIdentity(
        name=request.param,
        user=None if anonymous else acting,
        api_key=None if anonymous else gateway_key.json()["key"],
        real_values=real_values,
    )


# --- what the generated requests are made of ------------------------------------------------------


def with_real_values(real_values: dict[str, list[str]], value: Any) -> st.SearchStrategy[Any]:
    """Generated ids and names never name a row: in some examples a parameter or a body field named like one of
    the tenant's real values gets it, so that handlers are exercised past their 404."""
    spots = [(path, path[-1]) for path, _ in leaves(value) if path and path[-1] in real_values]

    def swapped(choices: tuple[Any, ...]) -> Any:
        result = value
        for (path, _), choice in zip(spots, choices, strict=True):
            result = replaced(result, path, choice) if choice is not None else result
        return result

    return st.tuples(*(st.sampled_from([None, *real_values[str(name)]]) for _, name in spots)).map(swapped)


def with_one_edge_value(value: Any) -> st.SearchStrategy[Any]:
    """The value as generated, or with one string given a NUL or one integer made too large for its column."""
    spots = [
        (path, leaf)
        for path, leaf in leaves(value)
        if isinstance(leaf, str) or (isinstance(leaf, int) and not isinstance(leaf, bool))
    ]
    if not spots:
        return st.just(value)

    def edge(spot: tuple[JsonPath, str | int]) -> st.SearchStrategy[Any]:
        path, leaf = spot
        if isinstance(leaf, str):
            return st.just(replaced(value, path, leaf[:1] + "\x00" + leaf[1:]))
        return st.sampled_from(EDGE_INTEGERS).map(lambda number: replaced(value, path, number))

    return st.one_of(st.just(value), st.sampled_from(spots).flatmap(edge))


def mutation_hook(real_values: dict[str, list[str]]) -> Hook:
    """For path and query parameters and bodies alike: real values in some examples, then an edge value."""

    def hook(_context: schemathesis.HookContext, value: Any) -> st.SearchStrategy[Any]:
        return with_real_values(real_values, value).flatmap(with_one_edge_value)

    return hook


def refuse_unknown_fields(schema: Any) -> None:
    """Every request struct is decoded with `forbid_unknown_fields`, which the published schema does not say:
    declared here, so that the bodies generated as valid are valid (invalid ones still carry unknown fields)."""
    for component in schema.get("components", {}).get("schemas", {}).values():
        if "properties" in component and "additionalProperties" not in component:
            component["additionalProperties"] = False


@pytest.fixture
def api_schema(fuzz_server: RunningLyss, fuzz_identity: FuzzIdentity) -> schemathesis.BaseSchema:
    """The schema the server publishes, as a client fetches it, with the hooks above."""
    raw = httpx.get(f"{fuzz_server.url}/schema/openapi.json").raise_for_status().json()
    refuse_unknown_fields(raw)
    schema = schemathesis.openapi.from_dict(raw, config=config_for(fuzz_identity.name))
    hook = mutation_hook(fuzz_identity.real_values)
    for container in ("path_parameters", "query", "body"):
        schema.hooks.register_hook_with_name(hook, f"flatmap_{container}")
    return schema


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's `from_fixture` renames the test node through `_nodeid`, which pytest 9.2 dropped."""
    request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def call_and_check(case: ApiCase, server: RunningLyss, identity: FuzzIdentity, http: requests.Session) -> None:
    if case.path.startswith("/v1/"):
        # The gateway takes API keys, not sessions: with one, generated bodies get past authentication.
        headers = {"Authorization": f"Bearer {identity.api_key}"} if identity.api_key else {}
    else:
        # A token minted per request: a generated logout or "sign out everywhere" ends only that one session.
        headers = server.headers_for(identity.user) if identity.user else {}
    # Echoed by the server and written beside a 500's traceback in its log.
    headers["X-Request-Id"] = f"fuzz-{uuid7()}"
    try:
        case.call_and_validate(
            base_url=server.url,
            session=http,
            headers=headers,
            checks=[not_a_server_error],
            timeout=REQUEST_TIMEOUT,
            # A redirect is the answer under test (OAuth sends the browser to the provider): not followed.
            allow_redirects=False,
        )
    except FailureGroup as failures:
        note = f"As {identity.name}. The server's log, with the traceback under the request id: {server.log}\n"
        raise FailureGroup(list(failures.exceptions), failures.message + note) from None


schema = schemathesis.pytest.from_fixture("api_schema")


# Deletions run after everything else, so that the real rows the hooks name stay there for the other operations.
@schema.exclude(method="DELETE").parametrize()
@pytest.mark.timeout(240)
def test_no_request_gets_a_server_error(
    case: ApiCase, fuzz_server: RunningLyss, fuzz_identity: FuzzIdentity, http: requests.Session
) -> None:
    call_and_check(case, fuzz_server, fuzz_identity, http)


@schema.include(method="DELETE").parametrize()
@pytest.mark.timeout(60)
def test_no_deletion_gets_a_server_error(
    case: ApiCase, fuzz_server: RunningLyss, fuzz_identity: FuzzIdentity, http: requests.Session
) -> None:
    call_and_check(case, fuzz_server, fuzz_identity, http)
