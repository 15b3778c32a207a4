"""Safe defaults (issue 9, item 4): signed commands unless the config says otherwise, no published secret
outside simulation (and every secret-looking example in the docs on that list), no common installer
password. The MQTT side of the signing default is tests/test_mqtt.py::test_commands_must_be_signed_unless_the_
config_says_otherwise."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
import pytest

from panel.api.app import create_app
from panel.auth import PUBLISHED, Secrets, published_secrets
from panel.daemon import Panel
from panel.errors import SecretsError
from panel.platform import parse_config

from .api_support import api_rig, bearer, initial_password
from .rig import make_config
from .support import ROOT, config_dict

# -- signed commands -------------------------------------------------------------------------------


def test_signed_commands_are_required_by_the_default_and_the_example_alike() -> None:
    mqtt = parse_config(config_dict(mqtt={"host": "broker.example", "username": "p"})).mqtt
    assert mqtt is not None and mqtt.require_signed_commands is True
    for example in [ROOT / "config" / "panel.example.toml", *sorted((ROOT / "config" / "profiles").glob("*.toml"))]:
        mqtt = tomllib.loads(example.read_text(encoding="utf-8")).get("mqtt", {})
        assert mqtt.get("require_signed_commands", True) is True, example


# -- published secrets ------------------------------------------------------------------------------

# Secret-looking literals where people copy from: a secrets-file line, an environment assignment, a
# bearer header, a webhook secret, a key named in prose.
LITERALS = [
    re.compile(r"\bwhsec_[A-Za-z0-9+/]{16,}={0,2}"),
    re.compile(r"\bPANEL_SECRET_[A-Z_]+=\"?([^\s\"',]+)"),
    re.compile(r"\b(?:installer_token|command_key|mqtt_password|osdp_scbk)\s*=\s*\"([^\"]+)\""),
    re.compile(r"\bBearer ([A-Za-z0-9._~+/-]{12,})"),
    re.compile(r"\bkey `([^`\s]{16,})`"),
]
PLACEHOLDER = re.compile(r"^(\$|<|\.\.\.|whsec_\.\.\.)|^[a-z_]+=<[^>]+>$")  # name=<what goes here>: a list entry


def published_examples() -> dict[str, str]:
    """Every secret-looking literal in the docs, config examples, README and scripts -> where it is."""
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "config").rglob("*.toml")),
        *sorted((ROOT / "scripts").iterdir()),
        *sorted((ROOT / "systemd").iterdir()),
        *sorted((ROOT / "packaging" / "debian").iterdir()),
    ]
    found: dict[str, str] = {}
    for path in files:
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for pattern in LITERALS:
                for m in pattern.finditer(line):
                    value = m.group(m.lastindex or 0)
                    if not PLACEHOLDER.match(value):
                        found.setdefault(value, f"{path.relative_to(ROOT)}:{n}")
    return found


def test_every_secret_example_in_the_docs_is_on_the_refuse_list() -> None:
    found = published_examples()
    # the scan finds the examples we know are there (it is not silently matching nothing)...
    assert {"demo-token-0123456789", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "example-command-key-0123456789"} <= set(
        found
    ), found
    # ...and every one of them is refused
    missing = {value: where for value, where in found.items() if value not in PUBLISHED}
    assert not missing, f"add these published examples to panel/auth/_published.py PUBLISHED: {missing}"


@pytest.mark.parametrize(
    "field, value",
    [
        ("installer_token", "demo-token-0123456789"),
        ("webhook_secrets", ["whsec_" + "A" * 32, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
        ("command_key", "example-command-key-0123456789"),
        ("osdp_scbk", "303132333435363738393A3B3C3D3E3F"),  # the OSDP default key, whatever its case
    ],
)
async def test_a_real_panel_refuses_to_start_with_a_published_secret_naming_the_key(
    tmp_path: Path, field: str, value: object
) -> None:
    secrets = Secrets.model_validate({field: value})
    want = f"{field}[1]" if field == "webhook_secrets" else field
    assert published_secrets(secrets) and published_secrets(secrets)[0].startswith(want + " is the example")
    panel = Panel(make_config(tmp_path), secrets, simulate=False)
    try:
        with pytest.raises(SecretsError) as exc:
            await panel.start()
    finally:
        if panel._core_built:
            await panel.stop("test over")
    message = str(exc.value)
    assert message.startswith(want + " is the example published in "), message
    assert not isinstance(value, str) or value not in message  # names the key, never echoes the secret
    assert not (tmp_path / "state" / "panel.db").exists(), "refused before anything was built"


async def test_simulation_may_use_the_demo_token(tmp_path: Path) -> None:
    panel = Panel(make_config(tmp_path), Secrets(installer_token="demo-token-0123456789"), simulate=True)
    panel.build_core()
    await panel.stop("test over")


def test_secrets_of_ones_own_pass() -> None:
    assert (
        published_secrets(
            Secrets(
                installer_token="a-token-of-my-own-8d1f2a", command_key="k" * 32, webhook_secrets=["whsec_" + "B" * 32]
            )
        )
        == []
    )


# -- installer passwords ------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["password1234", "P@ssw0rd2024"])
async def test_a_common_installer_password_is_refused_with_its_own_code_and_changes_nothing(
    tmp_path: Path, password: str
) -> None:
    rig = api_rig(tmp_path)
    try:
        old = initial_password(rig)
        app = create_app(rig.panel, simulated=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://panel") as c:
            session = (await c.post("/api/v1/auth/login", json={"password": old})).json()["token"]
            r = await c.post(
                "/api/v1/auth/password",
                headers=bearer(session),
                json={"current_password": old, "new_password": password},
            )
            assert r.status_code == 422 and r.json()["code"] == "common_password", r.text
            assert password not in r.text
            assert (await c.get("/api/v1/auth/me", headers=bearer(session))).status_code == 200, "session ended"
            assert (await c.post("/api/v1/auth/login", json={"password": old})).status_code == 200
            assert (await c.post("/api/v1/auth/login", json={"password": password})).status_code == 401
    finally:
        await rig.close()


def test_the_credential_file_refuses_common_passwords_too(tmp_path: Path) -> None:
    from panel.auth import CredentialError, InstallerCredential

    cred = InstallerCredential(tmp_path)
    cred.ensure()
    for password in ("password1234", "Password1234!", "qwertyuiop12", "letmeinletmein"):
        with pytest.raises(CredentialError) as exc:
            cred.set(password)
        assert exc.value.code == "common_password", password
    assert cred.info().generation == 1  # type: ignore[union-attr]
    assert cred.set("correct horse battery staple").generation == 2  # a passphrase of unrelated words is fine
