"""Where a webhook may be sent: the address policy against server-side request forgery.

A partner names the URL, and the delivery worker then POSTs from inside the deployment;
unchecked, it could be aimed at the cloud metadata service (169.254.169.254), an admin
port on localhost, or a database on the private network. So, outside development
(``Settings.development``), an endpoint must be https and every address its host
resolves to must be globally routable: loopback, link-local, private (RFC 1918, unique
local), multicast, reserved, unspecified, and the other special ranges the stdlib's
``ipaddress`` knows as not global (shared 100.64/10, documentation, benchmarking) are
refused, an IPv4 address inside an IPv6 one (mapped, 6to4, Teredo) judged as itself.

It is judged twice: when the subscription is made (a typed ``URL_NOT_ALLOWED``) and
again before each batch of deliveries, against a fresh resolution (DNS can change
after the check); the worker then connects to the very address it checked — the URL's
host replaced by it, the name kept for ``Host`` and TLS (SNI and the certificate's
name) — and never resolves again.

The operator's allowlist, ``COALITION_WEBHOOK_ALLOW_HOSTS`` (comma-separated host names
and IP networks), lets on-prem receivers and tests through: a listed host name is sent
to as its URL says (http allowed, resolved by the HTTP client); an address inside a
listed network passes the address rule (and may be http), and is still pinned.
In development the policy is off, so loopback receivers work as they are.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from coalition.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
ADDRESSES_MAX = 16  # of one host's resolution: judged, all of them


def refused_class(address: Address) -> str | None:
    """Why ``address`` may not be sent to (its class), or None if it is global."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if inner is not None:
            return refused_class(inner)
    for name, is_it in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    ):
        if is_it:
            return name
    return None


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now (the system resolver)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: ``address`` replaces the URL's host (None: as the URL says —
    an allowlisted host, or the policy is off)."""

    address: str | None


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    enforced: bool
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()
    resolver: Resolver = resolve

    @classmethod
    def parse(cls, enforced: bool, allow: str) -> UrlPolicy:
        """``allow``: COALITION_WEBHOOK_ALLOW_HOSTS, host names and networks."""
        hosts, networks = set(), []
        for item in (part.strip().lower().rstrip(".") for part in allow.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if not all(c.isalnum() or c in "-._" for c in item):
                raise ValueError(
                    "COALITION_WEBHOOK_ALLOW_HOSTS: host names and IP networks"
                    f" (10.0.0.0/8), comma-separated (not {item!r})"
                )
            hosts.add(item)
        return cls(enforced, frozenset(hosts), tuple(networks))

    def judge(self, url: str) -> Target | str:
        """Where ``url`` may be posted to, or why not (a sentence)."""
        if not self.enforced:
            return Target(None)
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if host in self.allow_hosts:
            return Target(None)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return "url: the port is not a number from 0 to 65535"
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            try:
                addresses = self.resolver(host, port)[:ADDRESSES_MAX]
            except (OSError, UnicodeError) as exc:
                return f"url: host {host} does not resolve ({exc})"
        if not addresses:
            return f"url: host {host} does not resolve"
        all_listed = True  # every address in an allowlisted network: http may do
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if any(address in network for network in self.allow_networks):
                continue
            all_listed = False
            why = refused_class(address)
            if why is not None:
                named = f"{host} is" if host == str(address) else f"{host} is {address},"
                return (
                    f"url: {named} a {why} address: webhooks go to public addresses"
                    " only (an operator may allow it: COALITION_WEBHOOK_ALLOW_HOSTS)"
                )
        if parts.scheme != "https" and not all_listed:
            return "url: webhooks are sent over https only"
        return Target(addresses[0])


def url_policy(settings: Settings) -> UrlPolicy:
    """The deployment's policy: enforced outside development, with its allowlist."""
    return UrlPolicy.parse(not settings.development, settings.webhook_allow_hosts)
