"""``panel enrol show``: the enrolment code (QR and short code) or the identity, on the console (parser: cli.py)."""

from __future__ import annotations

import argparse
import time

from ..platform import iso8601, load_config
from ._code import current_code
from ._service import ENROLMENT_DIR, offline_status


def enrol_command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.enrol.est_url is None:
        print("panel: enrolment is off on this panel (enrol.est_url is not set); the broker and webhooks come from "
              "[mqtt] and [webhooks] in the config")
        return 1
    ident, answer = offline_status(cfg)
    said = (f"last answer ({answer.get('at')}): {answer.get('code')}: {answer.get('message')}"
            if answer is not None else None)
    if ident is not None:
        print(f"enrolled: panel {ident.panel_id}, certificate {ident.serial}, valid until {iso8601(ident.not_after)}")
        print(f"broker: {ident.mqtt_host}:{ident.mqtt_port}")
        if said:
            print(said)
        print("to enrol again (another backend, a revoked certificate): installer page, Enrolment: Enrol again")
        return 0
    code = current_code(cfg.storage.dir / ENROLMENT_DIR, cfg.panel.id, cfg.enrol.code_ttl_s, time.time())
    if not args.no_qr:
        print(code.qr_terminal())
    print(f"panel id:        {code.panel_id}")
    print(f"enrolment code:  {code.short}")
    print(f"valid until:     {iso8601(code.expires)}")
    print(f"QR payload:      {code.uri}")
    print("Redeem it in your backend account (scan the QR code, or type the panel id and the code); the panel then "
          "enrols by itself.")
    if said:
        print(said)
    return 0
