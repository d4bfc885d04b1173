"""`lyss smoke URL`: a post-deploy check of a running Lyss, step by step, over its public HTTP API."""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec

SMOKE_KEY_NAME = "lyss smoke check"
SMOKE_TEXT = "lyss smoke check"


class Credentials(msgspec.Struct, frozen=True):
    tenant: str
    email: str
    password: str


class StepResult(msgspec.Struct, frozen=True):
    name: str
    status: str  # "ok", "FAIL" or "skip"
    detail: str = ""
    elapsed_ms: int | None = None

    def line(self) -> str:
        if self.status == "ok":
            extra = f"  ({self.detail})" if self.detail else ""
            return f"ok    {self.name:<16}{self.elapsed_ms} ms{extra}"
        return f"{self.status:<6}{self.name}: {self.detail}"


class StepFailed(Exception):
    """A step's check did not hold; the message is what the operator reads after the step's name."""


def _expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise StepFailed(f"HTTP {response.status_code} from {response.request.url.path}: {_message(response)}")
    try:
        return response.json()
    except ValueError:
        raise StepFailed(f"{response.request.url.path} answered something other than JSON") from None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or "no body"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)[:200]
    return str(body)[:200]


class SmokeCheck:
    """The steps, in order; a step whose prerequisite failed is skipped, naming that step."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        credentials: Credentials | None,
        api_key: str | None,
        model: str,
        embedding_model: str,
    ) -> None:
        self.client = client
        self.credentials = credentials
        self.api_key = api_key
        self.model = model
        self.embedding_model = embedding_model
        self.access_token: str | None = None
        self.temporary_key_id: str | None = None
        self.results: list[StepResult] = []

    async def run(self) -> list[StepResult]:
        await self._step("health", self._health)
        await self._step("readiness", self._readiness, needs=["health"])
        await self._step(
            "sign-in", self._sign_in, needs=["readiness"], unless=None if self.credentials else "no credentials given"
        )
        # Without a key of the operator's, the gateway steps use one issued for this run and removed after it.
        key_step = "readiness" if self.api_key else "api key"
        if not self.api_key:
            await self._step("api key", self._issue_key, needs=["sign-in"])
        await self._step("chat stream", self._chat_stream, needs=[key_step])
        await self._step("embedding", self._embedding, needs=[key_step])
        await self._step(
            "memory search",
            self._memory_search,
            needs=["sign-in"],
            unless=None if self.credentials else "no credentials given",
        )
        if self.temporary_key_id is not None:
            await self._step("api key removal", self._remove_key)
        return self.results

    def _failed(self, name: str) -> bool:
        return any(result.name == name and result.status != "ok" for result in self.results)

    async def _step(
        self,
        name: str,
        check: Callable[[], Awaitable[str]],
        *,
        needs: list[str] | None = None,
        unless: str | None = None,
    ) -> bool:
        if unless is not None:
            self.results.append(StepResult(name, "skip", unless))
            return False
        for earlier in needs or []:
            if self._failed(earlier):
                self.results.append(StepResult(name, "skip", f"{earlier} did not pass"))
                return False
        started = time.perf_counter()
        try:
            detail = await check()
        except StepFailed as error:
            self.results.append(StepResult(name, "FAIL", str(error)))
            return False
        except httpx.TimeoutException:
            self.results.append(StepResult(name, "FAIL", "no answer in time"))
            return False
        except httpx.HTTPError as error:
            self.results.append(StepResult(name, "FAIL", f"{type(error).__name__}: {error}"))
            return False
        self.results.append(StepResult(name, "ok", detail, round((time.perf_counter() - started) * 1000)))
        return True

    def _user_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def _key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def _health(self) -> str:
        body = _expect(await self.client.get("/healthz"), 200)
        if body.get("status") != "ok":
            raise StepFailed(f"status {body.get('status')!r}")
        return ""

    async def _readiness(self) -> str:
        response = await self.client.get("/readyz")
        if response.status_code == 503:
            checks = response.json().get("checks", {}) if "json" in response.headers.get("content-type", "") else {}
            broken = [f"{name} {state}" for name, state in checks.items() if state != "ok"]
            raise StepFailed(", ".join(broken) or "not ready")
        _expect(response, 200)
        return ""

    async def _sign_in(self) -> str:
        assert self.credentials is not None
        body = _expect(
            await self.client.post(
                "/api/auth/login",
                json={
                    "tenant": self.credentials.tenant,
                    "email": self.credentials.email,
                    "password": self.credentials.password,
                },
            ),
            200,
        )
        if body.get("status") != "authenticated":
            raise StepFailed(f"the account needs a second factor ({body.get('status')}); use one without, or --api-key")
        self.access_token = str(body["access_token"])
        return f"as {self.credentials.email}"

    async def _issue_key(self) -> str:
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        body = _expect(
            await self.client.post(
                "/api/tokens",
                json={"name": SMOKE_KEY_NAME, "expires_at": expires.isoformat()},
                headers=self._user_headers(),
            ),
            201,
        )
        self.api_key = str(body["key"])
        self.temporary_key_id = str(body["token"]["id"])
        return "temporary, removed at the end"

    async def _remove_key(self) -> str:
        response = await self.client.delete(f"/api/tokens/{self.temporary_key_id}", headers=self._user_headers())
        if response.status_code not in (200, 204):
            raise StepFailed(f"HTTP {response.status_code}: remove the key '{SMOKE_KEY_NAME}' by hand")
        return ""

    async def _chat_stream(self) -> str:
        request = {
            "model": self.model,
            "stream": True,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": SMOKE_TEXT}],
        }
        started = time.perf_counter()
        first_event_ms: int | None = None
        done = False
        async with self.client.stream(
            "POST", "/v1/chat/completions", json=request, headers=self._key_headers()
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise StepFailed(f"HTTP {response.status_code}: {_message(response)}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    done = True
                    break
                if first_event_ms is None:
                    first_event_ms = round((time.perf_counter() - started) * 1000)
                event = msgspec.json.decode(data)
                if isinstance(event, dict) and "error" in event:
                    raise StepFailed(f"the stream broke off: {str(event['error'])[:200]}")
        if first_event_ms is None:
            raise StepFailed("the stream ended before its first event")
        if not done:
            raise StepFailed("the stream ended without [DONE]")
        return f"model {self.model}, first event {first_event_ms} ms"

    async def _embedding(self) -> str:
        body = _expect(
            await self.client.post(
                "/v1/embeddings",
                json={"model": self.embedding_model, "input": SMOKE_TEXT},
                headers=self._key_headers(),
            ),
            200,
        )
        data = body.get("data") or []
        vector = data[0].get("embedding") if data and isinstance(data[0], dict) else None
        if not isinstance(vector, list) or not vector:
            raise StepFailed("the answer holds no embedding")
        return f"{len(vector)} dimensions"

    async def _memory_search(self) -> str:
        body = _expect(
            await self.client.post(
                "/api/memories/search", json={"query": SMOKE_TEXT, "limit": 1}, headers=self._user_headers()
            ),
            200,
        )
        if not isinstance(body, list):
            raise StepFailed("the answer is not a list of results")
        return ""


async def run_smoke(
    url: str,
    *,
    credentials: Credentials | None = None,
    api_key: str | None = None,
    model: str = "echo",
    embedding_model: str | None = None,
    timeout_seconds: float = 15.0,
) -> list[StepResult]:
    """Every step against the Lyss at `url`; exit status 0 is for a run where no step says FAIL."""
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_seconds) as client:
        check = SmokeCheck(
            client,
            credentials=credentials,
            api_key=api_key,
            model=model,
            embedding_model=embedding_model or model,
        )
        return await check.run()


def passed(results: list[StepResult]) -> bool:
    return not any(result.status == "FAIL" for result in results)
