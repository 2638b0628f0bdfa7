def test_health(api):
    assert api.client.get("/health").json() == {"status": "ok"}


def test_admin_token(api):
    assert api.admin["Authorization"].startswith("Bearer ey")
