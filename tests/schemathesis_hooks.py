"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

A long-poll waits up to ``wait_s`` seconds for an event by design; generated values are capped at
0.2 s so the run stays short. WHEP's offer is ``application/sdp`` text, sent as the bytes generated
for it (schemathesis has no serializer of its own for that type). Everything else is generated as the
OpenAPI document allows.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    query = case.query
    if isinstance(query, dict):
        wait = query.get("wait_s")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0.2:
            query["wait_s"] = 0.2
    return case


schemathesis.serializer.alias("application/sdp", "application/octet-stream")
