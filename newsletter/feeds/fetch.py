"""Download a feed from an http(s) URL without letting the URL reach the machine's own network.

A feed URL is typed by an editor but may come from anywhere (a newsroom's CMS, a mail), and
a redirect is chosen by the remote server. Left alone, either could make us fetch
http://127.0.0.1:8025/..., a cloud metadata address (169.254.169.254) or a box on the LAN.
So every hop's host is resolved here, every address it resolves to is checked, and the
connection goes to the checked address itself (the URL's host stays in `Host` and in TLS's
SNI and certificate check): a second DNS answer cannot swap in another address between the
check and the connect. The peer actually connected to is checked once more.

The whole download, redirects and DNS included, has one deadline and one byte cap (counted
after decompression, so a gzip bomb stops at the cap too).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from newsletter.errors import ConfigError, FeedError

MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as text; blocking, like getaddrinfo.
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The machine's resolver (getaddrinfo): every address of `host` for a TCP connection."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout: float  # seconds for the whole import: the download, then writing the entries
    allow_private: bool = False
    # Private networks that may be fetched all the same (the newsroom's CMS on the LAN).
    allowed_networks: tuple[IPNetwork, ...] = ()
    ca_file: str = ""  # a CA bundle to trust instead of the system's (an internal CMS)
    max_entries: int = 200  # the newest this many entries are imported; the rest skipped
    # Who answers DNS questions; a parameter so a test can give a slow one.
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)


@dataclass(frozen=True)
class _Hop:
    url: httpx.URL
    addresses: tuple[IPAddress, ...]  # every one checked; tried in the resolver's order


def networks(values: tuple[str, ...], setting: str) -> tuple[IPNetwork, ...]:
    """`values` as networks; ConfigError names `setting` and the value it cannot read."""
    try:
        return tuple(ipaddress.ip_network(value, strict=False) for value in values)
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: {exc}; list addresses or networks such as 10.0.0.5 or 10.0.0.0/24."
        ) from None


def shown(url: str | httpx.URL) -> str:
    """`url` without a user name and password, for messages and the article's front matter.

    The authority ends at the first `/`, `?` or `#`, and the user information at the LAST
    `@` before it (as browsers and httpx read it), so a password holding a bare `@` goes
    whole. `/`, `?` and `#` in a password must be percent-encoded for the URL to be valid.
    """
    text = str(url)
    scheme, separator, rest = text.partition("://")
    if not separator:
        return text
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" not in authority:
        return text
    return f"{scheme}://{authority.rpartition('@')[2]}{rest[end:]}"


def fetch(url: str, limits: Limits) -> bytes:
    """The body of `url`, following at most MAX_REDIRECTS redirects; FeedError says why not."""
    try:
        return asyncio.run(_fetch_within(url, limits))
    except TimeoutError:
        raise FeedError(
            f"{shown(url)}: the download took longer than {limits.timeout:g} s; try again "
            "later, or raise feed_timeout if the feed is large and the server slow."
        ) from None


async def _fetch_within(url: str, limits: Limits) -> bytes:
    async with asyncio.timeout(limits.timeout):
        # trust_env=False: a proxy from the environment would connect on our behalf to
        # whatever it resolves, bypassing the address check.
        verify = ssl.create_default_context(cafile=limits.ca_file) if limits.ca_file else True
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, verify=verify
        ) as client:
            return await _follow(client, url, shown(url), limits)


async def _follow(client: httpx.AsyncClient, url: str, origin: str, limits: Limits) -> bytes:
    seen: set[str] = set()
    current = _parse(url, origin)
    for _ in range(MAX_REDIRECTS + 1):
        if str(current) in seen:
            raise FeedError(f"{origin}: redirect loop at {shown(current)}; fix the feed's address.")
        seen.add(str(current))
        hop = await _checked_hop(current, origin, limits)
        body, location = await _get(client, hop, origin, limits)
        if location is None:
            return body
        current = _parse(str(current.join(location)), origin)
    raise FeedError(f"{origin}: more than {MAX_REDIRECTS} redirects; fix the feed's address.")


def _parse(candidate: str, origin: str) -> httpx.URL:
    try:
        parsed = httpx.URL(candidate)
    except httpx.InvalidURL as exc:
        raise FeedError(f"{origin}: {shown(candidate)!r} is not a valid URL ({exc}).") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FeedError(
            f"{origin}: {shown(candidate)!r} is not an http(s) URL; only http and https feeds are "
            "fetched (give a file path for a local feed)."
        )
    return parsed


async def _checked_hop(url: httpx.URL, origin: str, limits: Limits) -> _Hop:
    addresses = await _resolve(url, origin, limits.resolver)
    if not limits.allow_private:
        for address in addresses:
            if not _public(address) and not any(address in n for n in limits.allowed_networks):
                raise FeedError(
                    f"{origin}: {url.host} is a private, loopback or link-local address "
                    f"({address}); such addresses are refused. Set "
                    "NEWSLETTER_FEED_ALLOW_NETWORKS (or NEWSLETTER_FEED_ALLOW_PRIVATE=1) to import "
                    "from your own network."
                )
    return _Hop(url, tuple(addresses))


async def _resolve(url: httpx.URL, origin: str, resolver: Resolver) -> list[IPAddress]:
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        answers = await _in_daemon_thread(resolver, url.host, port)
    except OSError as exc:
        raise FeedError(f"{origin}: cannot resolve {url.host} ({exc}).") from None
    # Every answer is checked, not only the first: which one a retry would use is not ours
    # to choose.
    return [ipaddress.ip_address(answer.split("%")[0]) for answer in answers]


async def _in_daemon_thread(resolver: Resolver, host: str, port: int) -> Sequence[str]:
    """`resolver(host, port)` in a thread nobody waits for once the deadline has passed.

    getaddrinfo cannot be cancelled, and asyncio's own `getaddrinfo` runs it in the loop's
    default executor, which `asyncio.run` joins before returning: a resolver that hangs for
    8 s held a 1 s deadline for 8 s. A daemon thread is abandoned instead; its late answer
    goes nowhere.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Sequence[str]] = loop.create_future()

    def settle(result: Sequence[str] | None, error: OSError | None) -> None:
        if answer.done():
            return  # the deadline cancelled the wait
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(result or ())

    def work() -> None:
        result: Sequence[str] | None = None
        error: OSError | None = None
        try:
            result = resolver(host, port)
        except OSError as exc:
            error = exc
        # RuntimeError: the loop is closed, the caller stopped waiting long ago.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="feed-dns", daemon=True).start()
    return await answer


# IPv6 forms that carry an IPv4 address (the last 32 bits) which the packet ends up at:
# NAT64 (well-known and local-use prefixes), IPv4-compatible and IPv4-translated.
_IPV4_INSIDE = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated, but still routed in-site


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in _SITE_LOCAL:
            return False
        inner = _embedded_ipv4(address)
        if inner is not None:
            return _public(inner)
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (::ffff:127.0.0.1 is 127.0.0.1), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002:AABB:CCDD::/48 is 6to4 to AA.BB.CC.DD
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client behind the Teredo relay
    if any(address in network for network in _IPV4_INSIDE):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def _get(
    client: httpx.AsyncClient, hop: _Hop, origin: str, limits: Limits
) -> tuple[bytes, str | None]:
    """One request to a checked address: (body, None) or (b"", the redirect's target)."""
    response, address = await _connect(client, hop, origin)
    try:
        _check_peer(response, address, origin)
        if response.status_code in REDIRECTS and "location" in response.headers:
            return b"", response.headers["location"]
        if response.status_code != 200:
            raise FeedError(
                f"{origin}: {shown(hop.url)} answered HTTP {response.status_code}; check "
                "the address."
            )
        return await _body(response, origin, limits.max_bytes), None
    except httpx.HTTPError as exc:
        raise FeedError(f"{origin}: cannot fetch {shown(hop.url)} ({_reason(exc)}).") from None
    finally:
        await response.aclose()


async def _connect(
    client: httpx.AsyncClient, hop: _Hop, origin: str
) -> tuple[httpx.Response, IPAddress]:
    """The response of the first checked address that accepts a connection (a host may
    resolve to an IPv6 address it does not listen on)."""
    extensions = {"sni_hostname": hop.url.host} if hop.url.scheme == "https" else {}
    headers = {"Host": hop.url.netloc.decode("ascii"), "Accept": _ACCEPT}
    failure: httpx.HTTPError | None = None
    for address in hop.addresses:
        direct = hop.url.copy_with(host=str(address))
        request = client.build_request("GET", direct, headers=headers, extensions=extensions)
        try:
            return await client.send(request, stream=True), address
        except httpx.ConnectError as exc:
            failure = exc
        except httpx.HTTPError as exc:
            failure = exc
            break
    reason = _reason(failure) if failure else "no address"
    raise FeedError(f"{origin}: cannot fetch {shown(hop.url)} ({reason}).")


_ACCEPT = "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.9"


def _check_peer(response: httpx.Response, address: IPAddress, origin: str) -> None:
    """The socket's far end is the address that was checked (nothing in between chose)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if peer is None or ipaddress.ip_address(str(peer[0]).split("%")[0]) != address:
        raise FeedError(f"{origin}: connected to {peer}, not the checked {address}.")


async def _body(response: httpx.Response, origin: str, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FeedError(_too_big(origin, limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise FeedError(_too_big(origin, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(origin: str, limit: int) -> str:
    return (
        f"{origin}: the feed is larger than the {limit:,}-byte limit; is it the right "
        "address? Raise feed_max_bytes if it is."
    )


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
