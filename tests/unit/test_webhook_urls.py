"""The webhook address policy (coalition/webhook_urls.py) over the address classes: what
a partner's URL may resolve to outside development, the allowlist, and development."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from coalition.webhook_urls import Target, UrlPolicy, refused_class, resolve


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "not globally routable"),  # shared address space (carrier NAT)
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4-mapped address is judged as itself
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 around the metadata address
        ("2002:7f00:1::1", "loopback"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),  # just past 172.16/12
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert refused_class(ipaddress.ip_address(address)) == why


def _policy(addresses: list[str] | Exception, allow: str = "") -> UrlPolicy:
    """The production policy, with a resolver that answers as a DNS server might."""

    def resolver(host: str, port: int) -> list[str]:
        if isinstance(addresses, Exception):
            raise addresses
        return addresses

    parsed = UrlPolicy.parse(True, allow)
    return UrlPolicy(True, parsed.allow_hosts, parsed.allow_networks, resolver)


def test_public_https_is_pinned_to_the_address_checked() -> None:
    assert _policy(["93.184.216.34"]).judge("https://hooks.example/h") == Target("93.184.216.34")
    assert _policy([]).judge("https://8.8.8.8:8443/h") == Target("8.8.8.8")  # a literal


@pytest.mark.parametrize(
    ("url", "addresses", "says"),
    [
        ("http://127.0.0.1:9000/admin", [], "loopback"),
        ("https://169.254.169.254/latest/meta-data/", [], "link-local"),
        ("https://[::1]/h", [], "loopback"),
        ("https://[::ffff:10.0.0.1]/h", [], "private"),
        ("https://internal.example/h", ["10.0.0.5"], "10.0.0.5, a private"),
        # One bad address among good ones is enough: the client could be steered to it.
        ("https://mixed.example/h", ["93.184.216.34", "127.0.0.1"], "loopback"),
        ("http://hooks.example/h", ["93.184.216.34"], "https only"),
        ("https://nowhere.example/h", [], "does not resolve"),
        ("https://nowhere.example/h", socket.gaierror("Name or service not known"), "resolve"),
        ("https://hooks.example:99999/h", ["93.184.216.34"], "port"),
    ],
)
def test_refused_outside_development(url: str, addresses: list[str] | Exception, says: str) -> None:
    refused = _policy(addresses).judge(url)
    assert isinstance(refused, str) and says in refused, refused


def test_the_operators_allowlist() -> None:
    # A listed host name: sent to as its URL says (http too), resolved by the client.
    assert _policy(["127.0.0.1"], "LocalHost.").judge("http://localhost:8080/h") == Target(None)
    # A listed network: its addresses pass, http too, still pinned.
    on_prem = _policy(["10.1.2.3"], "10.0.0.0/8, hooks.partner.example")
    assert on_prem.judge("http://receiver.lan/h") == Target("10.1.2.3")
    # … but only its addresses: another private one is still refused.
    assert "192.168.0.9" in str(_policy(["192.168.0.9"], "10.0.0.0/8").judge("https://x.lan/"))
    with pytest.raises(ValueError, match="COALITION_WEBHOOK_ALLOW_HOSTS"):
        UrlPolicy.parse(True, "https://hooks.example/")


def test_development_lets_everything_through() -> None:
    assert UrlPolicy.parse(False, "").judge("http://127.0.0.1:1/") == Target(None)


def test_the_system_resolver_is_judged_too() -> None:
    """``localhost`` resolved for real (the hosts file) is refused as loopback."""
    assert "127.0.0.1" in resolve("localhost", 443)
    refused = UrlPolicy.parse(True, "").judge("https://localhost/h")
    assert isinstance(refused, str) and "loopback" in refused
