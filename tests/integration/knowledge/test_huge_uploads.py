"""A 2 GB upload to a real server (granian, `lyss serve`): refused with a 413 on its announced length before
any of its body is sent, or, streamed chunked, after at most about the upload limit; nothing is stored."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.knowledge.test_knowledge_bases import EMBEDDER
from tests.support.commands import RunningLyss
from tests.support.mock_upstream import MockUpstream
from tests.support.tenants import TenantRows

pytestmark = pytest.mark.slow

TWO_GB = 2 * 1024**3
BOUNDARY = "lyss-boundary"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
).encode()


async def _base(lyss: RunningLyss, tenant: TenantRows, upstream: MockUpstream) -> str:
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        channel = await api.post(
            "/api/channels",
            json={
                "name": "huge-embed",
                "type": "openai-compatible",
                "models": [EMBEDDER],
                "keys": ["sk-upstream-test"],
                "base_url": upstream.base_url("huge-embed"),
            },
            headers=lyss.headers_for(tenant.admin),
        )
        assert channel.status_code == 201, channel.text
        base = await api.post(
            "/api/knowledge-bases",
            json={"name": "Huge", "embedding_model": EMBEDDER},
            headers=lyss.headers_for(tenant.user),
        )
        assert base.status_code == 201, base.text
        return str(base.json()["id"])


async def _send_huge(lyss: RunningLyss, tenant: TenantRows, base_id: str, *, chunked: bool) -> tuple[bytes, int]:
    """POST a multipart upload of 2 GB: announced by Content-Length (nothing of the body sent before the answer),
    or streamed chunked, 1 MiB at a time, until the server answers or closes; (its status line and headers,
    the bytes of body sent)."""
    address = urlsplit(lyss.url)
    assert address.hostname is not None
    assert address.port is not None
    headers = {
        **lyss.headers_for(tenant.user),
        "Host": f"{address.hostname}:{address.port}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        **({"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(HEAD) + TWO_GB)}),
    }
    request = f"POST /api/knowledge-bases/{base_id}/documents HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    if chunked:
        return await asyncio.to_thread(_stream_chunked, address.hostname, address.port, request.encode() + b"\r\n")
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(request.encode() + b"\r\n")
    try:
        # The announced length alone is refused: the answer comes before any of the body is sent.
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10), 0
    finally:
        writer.close()


def _framed(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def _stream_chunked(host: str, port: int, request: bytes) -> tuple[bytes, int]:
    """Send the body chunked until the server answers or stops taking it, reading all the while. A plain socket:
    a server that answers and closes makes the next write fail, and asyncio's transport then closes without
    reading the answer that is already in the socket's receive buffer (where it can still be read)."""
    piece = _framed(b"a" * (1024 * 1024))
    answer, sent, refused = b"", 0, False
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        connection.setblocking(False)
        pending = memoryview(_framed(HEAD))
        while sent < TWO_GB and b"\r\n\r\n" not in answer:
            readable, writable, _ = select.select([connection], [] if refused else [connection], [], 10)
            if not readable and not writable:
                break  # ten seconds without a word or room to write
            if readable:
                try:
                    received = connection.recv(65536)
                except OSError:
                    break
                if not received:
                    break
                answer += received
                continue
            try:
                written = connection.send(pending)
            except OSError:
                refused = True  # closed on us: what it answered is still to be read
                continue
            sent += written
            pending = pending[written:] or memoryview(piece)
    return answer, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_2_gb_upload_is_refused_after_at_most_the_limit_is_read(
    lyss: RunningLyss, tenant_a: TenantRows, upstream: MockUpstream, chunked: bool
) -> None:
    base_id = await _base(lyss, tenant_a, upstream)
    started = time.monotonic()
    answered, sent = await _send_huge(lyss, tenant_a, base_id, chunked=chunked)
    elapsed = time.monotonic() - started
    assert answered.startswith(b"HTTP/1.1 413"), answered[:200]
    limit = lyss.settings.kb_max_upload_bytes
    # What the client got to send before the refusal: the limit plus what sockets buffer, far from 2 GB.
    assert sent <= limit + 16 * 1024 * 1024, sent
    assert elapsed < 30
    async with httpx.AsyncClient(base_url=lyss.url) as api:
        listed = await api.get(f"/api/knowledge-bases/{base_id}/documents", headers=lyss.headers_for(tenant_a.user))
    assert listed.json() == []
