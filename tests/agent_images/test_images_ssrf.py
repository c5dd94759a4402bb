"""The SSRF guard: the address policy as a table, and end to end through
``ensure_image`` (every hop checked, the checked address is the one used)."""

from __future__ import annotations

import os

import pytest

from otherix.agent.images import ImageError
from otherix.agent.images.download import _next_hop
from otherix.agent.images.ssrf import SsrfPolicy, refusal
from otherix.agent.images.transport import parse_url

pytestmark = pytest.mark.security

DEFAULT = SsrfPolicy()
DEV = SsrfPolicy(allow_loopback_and_link_local=True)


@pytest.mark.parametrize(
    ("address", "default", "dev"),
    [
        ("127.0.0.1", "loopback", None),
        ("127.8.9.10", "loopback", None),
        ("::1", "loopback", None),
        ("169.254.1.1", "link-local", None),
        ("fe80::1", "link-local", None),
        ("fe80::1%2", "link-local", None),
        ("169.254.169.254", "metadata", "metadata"),
        ("fd00:ec2::254", "metadata", "metadata"),
        ("0.0.0.0", "unspecified", "unspecified"),
        ("0.1.2.3", "unspecified", "unspecified"),
        ("::", "unspecified", "unspecified"),
        ("224.0.0.1", "multicast", "multicast"),
        ("ff02::1", "multicast", "multicast"),
        ("255.255.255.255", "broadcast", "broadcast"),
        ("::ffff:127.0.0.1", "loopback", None),
        ("::ffff:169.254.169.254", "metadata", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", "loopback", None),  # 6to4 of 127.0.0.1
        ("10.1.2.3", None, None),  # RFC 1918: allowed
        ("172.16.0.1", None, None),
        ("192.168.1.10", None, None),
        ("100.64.0.1", None, None),
        ("fd12:3456::1", None, None),  # ULA: allowed
        ("93.184.216.34", None, None),
        ("2606:2800:220:1::1", None, None),
    ],
)
def test_policy(address, default, dev):
    for policy, want in ((DEFAULT, default), (DEV, dev)):
        got = refusal(address, policy)
        if want is None:
            assert got is None, (address, got)
        else:
            assert got is not None, address
            assert want in got, (address, got)


def test_allowed_networks_open_one_address_only():
    policy = SsrfPolicy.with_networks("127.0.0.1/32", "169.254.169.254/32")
    assert refusal("127.0.0.1", policy) is None
    assert refusal("169.254.169.254", policy) is None
    assert "loopback" in str(refusal("127.0.0.2", policy))
    assert "loopback" in str(refusal("::1", policy))


def refused(cache, pool, url) -> ImageError:
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert err.value.code == "image_url_forbidden"
    assert not err.value.retryable
    assert "images.allowed_networks" in err.value.message  # the key that opens it
    assert os.listdir(pool / "images") == []
    assert os.listdir(pool / "scratch") == []
    return err.value


def test_loopback_refused_by_default(make_cache, origin, pool):
    cache = make_cache(allowed_networks=())
    url = origin.serve("/x.img", b"data")
    assert "loopback" in refused(cache, pool, url).message
    assert origin.hits["/x.img"] == 0


def test_loopback_allowed_with_the_setting(make_cache, origin, pool):
    cache = make_cache(allowed_networks=(), allow_loopback_and_link_local=True)
    url = origin.serve("/x.img", b"data")
    assert cache.ensure_image(pool, url).size_bytes == 4


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/x.img",
        "http://[fe80::1]/x.img",
        "http://[fd00:ec2::254]/x.img",
        "http://[::1]/x.img",
        "http://0.0.0.0/x.img",
        "http://224.0.0.1/x.img",
    ],
)
def test_forbidden_addresses_refused_without_connecting(cache, pool, url):
    assert "is not allowed" in refused(cache, pool, url).message


def test_metadata_refused_even_in_dev_mode(make_cache, pool):
    cache = make_cache(allow_loopback_and_link_local=True)
    assert "metadata" in refused(cache, pool, "http://169.254.169.254/x.img").message


def test_redirect_from_allowed_host_to_loopback_refused(cache, origin, pool):
    # 127.0.0.1 is allowed (allowed_networks); 127.0.0.2 is plain loopback.
    target = origin.serve("/secret.img", b"secret")
    url = origin.redirect("/x.img", target.replace("127.0.0.1", "127.0.0.2"))
    err = refused(cache, pool, url)
    assert "127.0.0.2" in err.message
    assert "loopback" in err.message
    assert origin.hits["/secret.img"] == 0


def test_redirect_to_metadata_refused(cache, origin, pool):
    url = origin.redirect("/x.img", "http://169.254.169.254/latest/meta-data/iam")
    assert "metadata" in refused(cache, pool, url).message


def test_names_resolving_to_a_refused_address_are_refused(make_cache, origin, pool):
    cache = make_cache(resolver=lambda host, port: ["10.9.9.9", "127.0.0.2"])
    url = origin.serve("/x.img", b"data").replace("127.0.0.1", "images.example")
    err = refused(cache, pool, url)
    assert "images.example (127.0.0.2)" in err.message


def test_connects_to_the_checked_address_once_resolved(make_cache, origin, pool):
    """DNS is asked once per hop; the connection goes to that answer with the real Host."""
    answers = [["127.0.0.1"], ["169.254.169.254"]]  # a rebinding DNS server
    calls: list[str] = []

    def resolver(host, port):
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    cache = make_cache(resolver=resolver)
    url = origin.serve("/x.img", b"data").replace("127.0.0.1", "images.example")
    img = cache.ensure_image(pool, url)
    assert img.size_bytes == 4
    assert calls == ["images.example"]
    assert origin.request_headers[-1]["Host"] == f"images.example:{origin.port}"


def test_unresolvable_host(make_cache, pool):
    def resolver(host, port):
        raise OSError("Name or service not known")

    cache = make_cache(resolver=resolver)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, "http://nowhere.invalid/x.img")
    assert err.value.code == "download_failed"
    assert "cannot resolve host nowhere.invalid" in err.value.message


def test_https_to_http_downgrade_refused(origin):
    # The rule itself; test_real_https_to_http_redirect_refused goes through a real server.
    with pytest.raises(ImageError, match="https to http") as err:
        _next_hop(parse_url("https://images.example/x.img"), origin.url_for("/x.img"), 302)
    assert err.value.code == "download_failed"
    assert not err.value.retryable


# --- https: the checked address is used, the name is verified ------------------------


def resolve_to_loopback(host, port):
    return ["127.0.0.1"]


def test_https_connects_to_the_checked_address_and_verifies_the_name(
    make_cache, tls_origin, tls_cert, pool
):
    cache = make_cache(resolver=resolve_to_loopback, ca_file=tls_cert.ca_file)
    url = tls_origin.serve("/x.img", b"over tls").replace("127.0.0.1", tls_cert.name)
    img = cache.ensure_image(pool, url)
    assert img.path.read_bytes() == b"over tls"
    assert tls_origin.request_headers[-1]["Host"] == f"{tls_cert.name}:{tls_origin.port}"


def test_https_certificate_for_another_name_is_refused(make_cache, tls_origin, tls_cert, pool):
    cache = make_cache(resolver=resolve_to_loopback, ca_file=tls_cert.ca_file)
    url = tls_origin.serve("/x.img", b"over tls").replace("127.0.0.1", "other.example")
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert err.value.code == "download_failed"
    assert "TLS error" in err.value.message
    assert os.listdir(pool / "scratch") == []


def test_https_untrusted_certificate_is_refused(make_cache, tls_origin, tls_cert, pool):
    cache = make_cache(resolver=resolve_to_loopback)  # system CAs only
    url = tls_origin.serve("/x.img", b"over tls").replace("127.0.0.1", tls_cert.name)
    with pytest.raises(ImageError) as err:
        cache.ensure_image(pool, url)
    assert "TLS error" in err.value.message


def test_real_https_to_http_redirect_refused(make_cache, tls_origin, tls_cert, origin, pool):
    cache = make_cache(resolver=resolve_to_loopback, ca_file=tls_cert.ca_file)
    plain = origin.serve("/x.img", b"plain")
    url = tls_origin.redirect("/x.img", plain).replace("127.0.0.1", tls_cert.name)
    with pytest.raises(ImageError, match="https to http"):
        cache.ensure_image(pool, url)
    assert origin.hits["/x.img"] == 0
