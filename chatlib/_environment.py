"""What the environment says about reaching a server: proxies and the CA bundle.

One rule for both default transports, so `SyncChat` and `AsyncChat` reach the same servers
the same way:

- Proxies: `http_proxy`/`https_proxy`/`all_proxy` (either case), skipped for the hosts of
  `no_proxy` (names and domain suffixes, `*`, and IP networks such as `10.0.0.0/8`).
  Read once per server (origin) and kept: `requests` would scan the environment twice per
  request.
- CA bundle: with `verify=True`, `REQUESTS_CA_BUNDLE`, else `CURL_CA_BUNDLE`, names the
  certificates to trust; otherwise the system's.

A session you pass in is yours: chatlib reads neither for it.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from chatlib._headers import origin_of

__all__ = ["ProxyTable", "ca_bundle"]


def ca_bundle(verify: bool | str) -> bool | str:
    """What to verify TLS against: `verify` itself, unless it is `True` and the environment
    names a CA bundle (`REQUESTS_CA_BUNDLE`, then `CURL_CA_BUNDLE`)."""
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


def _in_no_proxy_network(host: str) -> bool:
    """Whether `host` is an IP address inside a network listed in `no_proxy` (CIDR)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    listed = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    for entry in listed.replace(" ", "").split(","):
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, or `None` (none set, or `no_proxy`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host) or _in_no_proxy_network(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme.lower()) or proxies.get("all") or None


_MAX_URLS = 256
_UNSET: Any = object()


class ProxyTable:
    """The environment's proxy per server, read on the first request to each origin."""

    def __init__(self, *, from_environment: bool) -> None:
        self._from_environment = from_environment
        self._by_origin: dict[str, str | None] = {}
        # The answer per URL as well: a client sends to the same few URLs, and a lookup of
        # the whole string saves splitting it on every request (bounded: cleared when full).
        self._by_url: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def proxy_for(self, url: str) -> str | None:
        """The proxy to send a request for `url` through, if any."""
        by_url = self._by_url
        found: str | None = by_url.get(url, _UNSET)  # one lookup: another thread may clear it
        if found is not _UNSET:
            return found
        origin = origin_of(url)
        try:
            proxy = self._by_origin[origin]
        except KeyError:
            proxy = environment_proxy(url) if self._from_environment else None
            with self._lock:
                self._by_origin[origin] = proxy
        if len(by_url) >= _MAX_URLS:
            by_url.clear()
        by_url[url] = proxy
        return proxy
