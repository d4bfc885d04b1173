"""A webhook receiver on loopback (a real aiohttp server in the test's loop) that keeps what it was sent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    def signed_with(self, secret: str) -> bool:
        """The check the docs tell a receiver to make."""
        timestamp = self.headers["X-Lyss-Timestamp"]
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(f"sha256={expected}", self.headers["X-Lyss-Signature"])


@dataclass
class WebhookReceiver:
    port: int = 0
    # The statuses to answer with, in order; 200 once they run out.
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(headers=dict(request.headers), body=await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        self.answered.append(status)
        return web.Response(status=status, text=f"answered {status} " + "x" * 600)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [item.event for item in self.received if kind is None or item.event["type"] == kind]

    async def wait_for(self, count: int, kind: str | None = None, within: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.events(kind)) < count:
            assert time.monotonic() < deadline, f"{len(self.events(kind))} of {count} events: {self.events()}"
            await asyncio.sleep(0.05)
        return self.events(kind)


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
