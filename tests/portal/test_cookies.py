"""A garbage session cookie is treated as no session, never a 500."""
import pytest


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["abc\x00def", "../../etc", "x" * 5000, "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"])
def test_garbage_session_cookie_gives_the_login_redirect_not_500(client, value):
    client.cookies["sessionid"] = value
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_a_real_session_cookie_still_logs_in(client, alice):
    client.force_login(alice)
    assert client.get("/").status_code == 200
