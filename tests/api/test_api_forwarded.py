"""``api.forwarded``: whose word on the client address is taken (table tests, no I/O)."""

from __future__ import annotations

import pytest

from otherix.api.forwarded import client_address, limit_key, parse_networks

PROXY = parse_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])

CASES = [
    # peer, Forwarded values, X-Forwarded-For values, trusted, expected client
    ("127.0.0.1", [], ["198.51.100.7"], (), "127.0.0.1"),  # nothing trusted: the peer
    ("127.0.0.1", ["for=198.51.100.7"], [], (), "127.0.0.1"),
    ("192.0.2.9", [], ["198.51.100.7"], PROXY, "192.0.2.9"),  # untrusted peer
    ("127.0.0.1", [], ["198.51.100.7"], PROXY, "198.51.100.7"),
    ("127.0.0.1", [], [], PROXY, "127.0.0.1"),  # trusted peer, no header
    # the client's own prefix is ignored: the rightmost untrusted entry counts
    ("127.0.0.1", [], ["1.2.3.4, 198.51.100.7"], PROXY, "198.51.100.7"),
    ("127.0.0.1", [], ["1.2.3.4", "198.51.100.7, 10.1.2.3"], PROXY, "198.51.100.7"),
    ("127.0.0.1", [], ["10.9.9.9, 10.1.2.3"], PROXY, "10.9.9.9"),  # all trusted: leftmost
    ("127.0.0.1", [], ["garbage, 198.51.100.7"], PROXY, "198.51.100.7"),
    ("127.0.0.1", [], ["198.51.100.7, unknown"], PROXY, "127.0.0.1"),  # stops at a non-address
    ("127.0.0.1", [], ["198.51.100.7:4711"], PROXY, "198.51.100.7"),
    # Forwarded (RFC 7239) wins over X-Forwarded-For
    ("127.0.0.1", ["for=198.51.100.7;proto=https"], ["203.0.113.1"], PROXY, "198.51.100.7"),
    ("127.0.0.1", ['for="[2001:db8::1]:4711"'], [], PROXY, "2001:db8::1"),
    ("127.0.0.1", ["for=1.2.3.4, for=198.51.100.7"], [], PROXY, "198.51.100.7"),
    ("127.0.0.1", ['For="_hidden", for=198.51.100.7'], [], PROXY, "198.51.100.7"),
    ("127.0.0.1", ["by=10.0.0.1"], ["203.0.113.1"], PROXY, "127.0.0.1"),  # no for=
    ("::ffff:127.0.0.1", [], ["198.51.100.7"], PROXY, "198.51.100.7"),  # v4-mapped peer
    ("fd00::5", [], ["2001:db8::9"], PROXY, "2001:db8::9"),
    ("testclient", [], ["198.51.100.7"], PROXY, "testclient"),  # not an address: as is
]


@pytest.mark.parametrize(("peer", "fwd", "xff", "trusted", "expected"), CASES)
def test_client_address(peer, fwd, xff, trusted, expected):
    assert client_address(peer, fwd, xff, trusted) == expected


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("-", "-"),
    ],
)
def test_limit_key_counts_ipv6_by_its_64(client, key):
    assert limit_key(client) == key


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "localhost", "", "1.2.3"])
def test_parse_networks_names_a_bad_entry(bad):
    with pytest.raises(ValueError, match="is not an IP address or CIDR"):
        parse_networks(["127.0.0.1", bad])


def test_trusted_proxies_setting_is_checked_at_start(tmp_path):
    from otherix.api.settings import ApiSettings
    from otherix.config import ConfigError, load_config

    ok = load_config(ApiSettings, overrides={"server.trusted_proxies": ["10.0.0.0/8", "::1"]})
    assert ok.server.trusted_proxies == ["10.0.0.0/8", "::1"]
    assert load_config(ApiSettings).server.trusted_proxies == []
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(ApiSettings, overrides={"server.trusted_proxies": ["nope"]})
