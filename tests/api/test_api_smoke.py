"""Smoke: the real server answers health, login and a pool round trip."""


def test_health_login_and_pool_list(api):
    with api.client(None) as c:
        r = c.get("/healthz")
        assert r.status_code == 200
        assert r.json()["version"]
    with api.client("viewer") as c:
        r = c.get("/v1/storage-pools")
        assert r.status_code == 200
        assert r.json() == {"data": [], "meta": {"next_cursor": None}}


def test_both_backends_serve(api_any_backend):
    with api_any_backend.client("admin") as c:
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json()["status"] == "ready"
