"""Fetching a document from a URL the tenant allows, without letting the URL reach into Lyss's own network."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from app.errors import InvalidRequest, NotAllowed, ServiceError
from app.settings import Settings

FIELD = "url"
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK_BYTES = 64 * 1024
# NAT64 (RFC 6052): an address in it is the IPv4 address in its last 32 bits, as a translating router reaches it.
_NAT64 = IPv6Network("64:ff9b::/96")
USER_AGENT = "Lyss knowledge fetcher"


class FetchTooLarge(ServiceError):
    status_code = 413


@dataclass(frozen=True)
class Fetched:
    """A document as its server sent it: the final URL (after redirects), its bytes, and what it said of them."""

    final_url: str
    data: bytes
    # The response's Content-Type without parameters, lower case ("" when absent).
    content_type: str
    # The name the response's Content-Disposition gives, else the last segment of the final URL's path.
    filename: str


def _refused(message: str) -> InvalidRequest:
    return InvalidRequest(f"`url`: {message}", field=FIELD)


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """Whether `host` is one of `allowed_hosts`: an exact name, or under a `*.example.com` (not that name itself)."""
    host = host.lower().rstrip(".")
    return any(
        (entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1) or host == entry
        for entry in allowed_hosts
    )


def is_public_address(address: IPv4Address | IPv6Address) -> bool:
    """Whether `address` is on the public internet: not loopback, private, link-local (the cloud metadata service at
    169.254.169.254 among them), multicast, reserved or unspecified. An IPv6 address that carries an IPv4 one
    (IPv4-mapped, NAT64, 6to4, Teredo) is judged by that IPv4 address too."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        # Connecting to ::ffff:a.b.c.d is connecting to a.b.c.d.
        return is_public_address(address.ipv4_mapped)
    embedded: list[IPv4Address] = []
    if isinstance(address, IPv6Address):
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(IPv4Address(int(address) & 0xFFFFFFFF))
    return all(
        candidate.is_global
        and not (
            candidate.is_loopback
            or candidate.is_private
            or candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
        )
        for candidate in (address, *embedded)
    )


def checked_url(text: str, allowed_hosts: list[str]) -> URL:
    """`text` as a URL Lyss may fetch: http or https, no credentials, a host the tenant allows."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError):
        raise _refused("this is not a URL.") from None
    if url.scheme not in ("http", "https"):
        raise _refused("only http:// and https:// URLs are fetched.")
    if url.user is not None or url.password is not None:
        raise _refused("a URL with a user name or password in it is not fetched.")
    host = url.raw_host
    if not host:
        raise _refused("the URL has no host.")
    if not host_allowed(host, allowed_hosts):
        raise NotAllowed(
            f"`url`: the host {host} is not one your organization allows documents from "
            "(an administrator lists them in Settings).",
            field=FIELD,
        )
    return url.with_fragment(None)


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses of `host` to connect to, resolved once here; any non-public one refuses the host entirely
    (unless the operator allows them), so a name that resolves partly inside cannot be used to reach in."""
    try:
        addresses = [ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise _refused(f"the host {host} could not be found.") from None
        addresses = list(dict.fromkeys(ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not allow_private and not all(is_public_address(address) for address in addresses):
        raise _refused(f"the host {host} is at a private or reserved network address, which is not fetched.")
    if not addresses:
        raise _refused(f"the host {host} could not be found.")
    return [str(address) for address in addresses]


class _PinnedResolver(AbstractResolver):
    """The connector's resolver: the addresses checked for each host, and nothing else (no second lookup a
    changed DNS answer could slip a private address into). The URL keeps its name, so Host and SNI do too."""

    def __init__(self) -> None:
        self.pinned: dict[str, list[str]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.pinned.get(host)
        if not addresses:
            raise OSError(f"{host} was not checked before connecting")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


async def _body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_large = FetchTooLarge(
        f"`url`: the document is larger than the {max_bytes} bytes an upload may have.", field=FIELD
    )
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise too_large
    return bytes(data)


async def fetch_document(text: str, *, allowed_hosts: list[str], max_bytes: int, settings: Settings) -> Fetched:
    """GET the document at `text`, following at most five redirects by hand: every hop's URL and addresses are
    checked again. Every refusal and failure is a 4xx naming `url`."""
    if not allowed_hosts:
        raise NotAllowed(
            "`url`: your organization takes no documents from URLs; an administrator can list the hosts "
            "allowed in Settings.",
            field=FIELD,
        )
    url = checked_url(text, allowed_hosts)
    resolver = _PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.knowledge_url_connect_timeout_seconds)
    try:
        async with (
            asyncio.timeout(settings.knowledge_url_timeout_seconds),
            aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as http,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                host = url.raw_host or ""
                resolver.pinned[host] = await checked_addresses(
                    host, url.explicit_port or url.port or 0, allow_private=settings.knowledge_url_allow_private
                )
                async with http.get(
                    url,
                    allow_redirects=False,
                    headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
                ) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise _refused(f"the server answered HTTP {response.status} without a Location.")
                        try:
                            target = str(url.join(URL(location)))
                        except (ValueError, TypeError):
                            raise _refused("the server redirected to something that is not a URL.") from None
                        url = checked_url(target, allowed_hosts)
                        continue
                    if not 200 <= response.status < 300:
                        raise _refused(f"the server answered HTTP status {response.status}.")
                    data = await _body(response, max_bytes)
                    disposition = response.content_disposition
                    return Fetched(
                        final_url=str(url),
                        data=data,
                        content_type=(response.content_type or "").lower(),
                        filename=(disposition.filename if disposition else None) or url.name,
                    )
            raise _refused(f"more than {MAX_REDIRECTS} redirects.")
    except TimeoutError:
        raise _refused("the server did not answer in time.") from None
    except (aiohttp.ClientError, OSError):
        raise _refused("the server could not be reached.") from None
