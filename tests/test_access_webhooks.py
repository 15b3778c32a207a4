"""The backend hears of a duress PIN (and every access event) by webhook, signed, with no secret in it;
the panel itself shows nothing different."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import parse_config

from .access_support import KEYPAD, press_keys
from .eventually import eventually
from .support import config_dict
from .webhook_receiver import WebhookReceiver


async def test_duress_reaches_the_backend_signed_and_without_the_pin(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with WebhookReceiver([secret]) as receiver:
        data = config_dict(access={"keypad": KEYPAD}, webhooks={"url": receiver.url, "heartbeat_s": 3600})
        data["storage"] = {"dir": str(tmp_path / "state")}
        data["api"] = {"listen": "127.0.0.1:0"}
        panel = Panel(parse_config(data), Secrets(webhook_secrets=[secret]), simulate=True)
        await panel.start()
        try:
            assert panel.access is not None
            await panel.access.set_pin(owner="alice", pin="13579", by="alice")
            await panel.access.set_pin(owner="alice", pin="97531", by="alice", duress=True)
            shown_before = dict(panel.lights.shown)
            await press_keys(panel, "97531#")
            await eventually(lambda: any(r.type == "access.duress" for r in receiver.records), 10,
                        "access.duress never reached the backend")
            await eventually(lambda: any(r.type == "access.granted" for r in receiver.records), 10, "no access.granted")
            duress = next(r for r in receiver.records if r.type == "access.duress")
            granted = next(r for r in receiver.records if r.type == "access.granted")
            assert duress.verified and granted.verified
            body = json.loads(duress.body)
            assert body["data"]["owner"] == "alice" and body["data"]["access_id"] == json.loads(granted.body)["data"]["access_id"]
            assert json.loads(granted.body)["data"]["label"] == "PIN"
            for r in receiver.records:
                assert "97531" not in r.body and "13579" not in r.body
            assert bool(panel.hw.relays["main"].value)
            # On the panel: the door light as for any release, nothing else changed by the duress.
            assert panel.lights.shown.get("door") == "on" and shown_before.get("status") == panel.lights.shown.get("status")
        finally:
            await panel.stop("test over")
