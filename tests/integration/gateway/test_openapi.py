"""The /v1 API in the OpenAPI document, while every /v1 request still goes to the gateway and nowhere else."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.handlers import ASGIRouteHandler
from litestar.routes import ASGIRoute

from tests.support.clients import AuthHeaders, Client, bearer
from tests.support.gateway import chat_body, issue_key
from tests.support.tenants import TenantRows

OPERATIONS = {
    "/v1/chat/completions": {"post"},
    "/v1/embeddings": {"post"},
    "/v1/rerank": {"post"},
    "/v1/images/generations": {"post"},
    "/v1/moderations": {"post"},
    "/v1/audio/speech": {"post"},
    "/v1/audio/transcriptions": {"post"},
    "/v1/models": {"get"},
    "/v1/models/{model}": {"get"},
    "/v1/messages": {"post"},
    "/v1/messages/count_tokens": {"post"},
    "/v1/responses": {"post"},
    "/v1/responses/{response_id}": {"get", "delete"},
    "/v1/responses/{response_id}/input_items": {"get"},
}
UNKNOWN_MODEL = "no-such-model"
UNKNOWN_RESPONSE = "resp_0123456789abcdef0123456789abcdef"
ANTHROPIC_BODY = {"model": UNKNOWN_MODEL, "messages": [{"role": "user", "content": "hello"}]}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": chat_body(model=UNKNOWN_MODEL),
    "/v1/embeddings": {"model": UNKNOWN_MODEL, "input": "hello"},
    "/v1/rerank": {"model": UNKNOWN_MODEL, "query": "hello", "documents": ["hello there"]},
    "/v1/images/generations": {"model": UNKNOWN_MODEL, "prompt": "an apple"},
    "/v1/moderations": {"model": UNKNOWN_MODEL, "input": "hello"},
    "/v1/audio/speech": {"model": UNKNOWN_MODEL, "input": "hello", "voice": "alloy"},
    "/v1/messages": {**ANTHROPIC_BODY, "max_tokens": 16},
    "/v1/messages/count_tokens": ANTHROPIC_BODY,
    "/v1/responses": {"model": UNKNOWN_MODEL, "input": "hello"},
}


def references(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(references(item) for item in value))
    return set()


async def test_the_document_lists_each_v1_operation_with_its_schemas_and_key(client: Client) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = {path: set(item) for path, item in document["paths"].items() if path.startswith("/v1")}
    assert paths == OPERATIONS
    schemas = document["components"]["schemas"]
    for path, methods in OPERATIONS.items():
        for method in methods:
            operation = document["paths"][path][method]
            assert {"LyssApiKey": []} in operation["security"]
            assert {"200", "default"} <= set(operation["responses"])
            if path == "/v1/audio/transcriptions":
                form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
                assert (form["required"], form["properties"]["file"]["format"]) == (["file", "model"], "binary")
            elif method == "post":
                assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            for reference in references(operation):
                assert reference.removeprefix("#/components/schemas/") in schemas, reference
    bearer_scheme = document["components"]["securitySchemes"]["LyssApiKey"]
    assert (bearer_scheme["type"], bearer_scheme["scheme"], bearer_scheme["bearerFormat"]) == (
        "http",
        "bearer",
        "sk-lyss-…",
    )
    error = schemas["V1OpenAIError"]
    detail = schemas[error["properties"]["error"]["$ref"].removeprefix("#/components/schemas/")]
    assert set(detail["properties"]) == {"message", "type", "param", "code"}
    # The request schemas are those of the structs that check the bodies.
    assert {"model", "messages"} <= set(schemas["V1ChatRequest"]["required"])
    assert "max_tokens" in schemas["V1MessagesRequest"]["required"]
    # Litestar's own components are still there beside them.
    assert any(not name.startswith("V1") for name in schemas)


def test_litestar_routes_nothing_under_v1_but_the_gateway_mount(app: Litestar) -> None:
    """The entries are documentation only: no handler Litestar could route a /v1 request to past the gateway."""
    under_v1 = [route for route in app.routes if route.path == "/v1" or route.path.startswith("/v1/")]
    assert len(under_v1) == 1
    route = under_v1[0]
    assert isinstance(route, ASGIRoute)
    assert isinstance(route.route_handler, ASGIRouteHandler)
    assert route.route_handler.is_mount


async def test_each_documented_operation_is_answered_by_the_gateway(
    client: Client, tenant_a: TenantRows, auth_headers: AuthHeaders
) -> None:
    key, _ = await issue_key(client, auth_headers(tenant_a.user))
    for path, method in [(path, method) for path, methods in OPERATIONS.items() for method in sorted(methods)]:
        url = path.replace("{model}", UNKNOWN_MODEL).replace("{response_id}", UNKNOWN_RESPONSE)
        anthropic = path.startswith("/v1/messages")
        # No key: the gateway's own 401, in its own shape (Litestar's would be `status_code` and `detail`).
        # The upload is a form; every other body JSON.
        sent: dict[str, Any] = (
            {"data": {"model": UNKNOWN_MODEL}, "files": {"file": ("a.wav", b"RIFF", "audio/wav")}}
            if path == "/v1/audio/transcriptions"
            else {"json": BODIES.get(path)}
        )
        response = await client.request(method, url, **sent)
        assert response.status_code == 401, (path, response.text)
        if anthropic:
            assert (response.json()["type"], response.json()["error"]["type"]) == ("error", "authentication_error")
        else:
            assert set(response.json()) == {"error"}
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["x-request-id"]
        response = await client.request(method, url, **sent, headers=bearer(key))
        if path == "/v1/models":
            assert (response.status_code, response.json()) == (200, {"object": "list", "data": []})
        elif anthropic:
            assert response.status_code == 404, (path, response.text)
            assert (response.json()["type"], response.json()["error"]["type"]) == ("error", "not_found_error")
            assert UNKNOWN_MODEL in response.json()["error"]["message"]
        elif "{response_id}" in path:
            assert response.status_code == 404, (path, method, response.text)
            assert response.json()["error"]["param"] == "response_id"
            assert UNKNOWN_RESPONSE in response.json()["error"]["message"]
        else:
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "model_not_found"
