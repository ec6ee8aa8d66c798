"""Scenario: a user registers, logs in with a password on a second device, and logs out."""

from nio import LoginResponse, LogoutResponse, RegisterResponse, WhoamiResponse

from conftest import PASSWORD, SERVER_NAME
from matrix_helpers import expect, expect_error


async def test_register_then_password_login(new_client):
    registering = new_client("alice")
    registered = expect(await registering.register("alice", PASSWORD, device_name="alice laptop"), RegisterResponse)

    assert registered.user_id == f"@alice:{SERVER_NAME}"
    assert registered.access_token
    assert registered.device_id

    registered_whoami = expect(await registering.whoami(), WhoamiResponse)
    assert registered_whoami.user_id == f"@alice:{SERVER_NAME}"
    assert registered_whoami.device_id == registered.device_id

    # A second client logs in with the localpart only, as a user types it.
    phone = new_client("alice")
    login = expect(await phone.login(PASSWORD, device_name="alice phone"), LoginResponse)

    assert login.user_id == f"@alice:{SERVER_NAME}"
    assert login.access_token
    assert login.access_token != registered.access_token
    assert login.device_id
    assert login.device_id != registered.device_id

    login_whoami = expect(await phone.whoami(), WhoamiResponse)
    assert login_whoami.user_id == f"@alice:{SERVER_NAME}"
    assert login_whoami.device_id == login.device_id


async def test_login_with_full_user_id(new_client):
    registering = new_client("bob")
    expect(await registering.register("bob", PASSWORD), RegisterResponse)

    client = new_client(f"@bob:{SERVER_NAME}")
    login = expect(await client.login(PASSWORD), LoginResponse)

    assert login.user_id == f"@bob:{SERVER_NAME}"
    whoami = expect(await client.whoami(), WhoamiResponse)
    assert whoami.user_id == f"@bob:{SERVER_NAME}"


async def test_login_wrong_password_rejected(new_client):
    registering = new_client("carol")
    expect(await registering.register("carol", PASSWORD), RegisterResponse)

    client = new_client("carol")
    expect_error(await client.login("not the password"), "M_FORBIDDEN")
    assert not client.access_token


async def test_register_taken_name_rejected(new_client):
    first = new_client("dave")
    expect(await first.register("dave", PASSWORD), RegisterResponse)

    second = new_client("dave")
    expect_error(await second.register("dave", "another password"), "M_USER_IN_USE")


async def test_logout_invalidates_token(new_client):
    client = new_client("erin")
    expect(await client.register("erin", PASSWORD), RegisterResponse)
    token = client.access_token

    expect(await client.logout(), LogoutResponse)

    # nio clears its token on logout, so the old token is put back to try it again.
    client.access_token = token
    expect_error(await client.whoami(), "M_UNKNOWN_TOKEN")
