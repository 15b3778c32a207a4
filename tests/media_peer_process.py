"""A resident in its own process, for tests that make a peer vanish (kill -9) mid-session.

Usage: python -m tests.media_peer_process <whep endpoint URL> <token>
Prints "session <Location>" once the answer is applied and "pictures <n>" once pictures arrive,
then stays connected until killed.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from .media_resident import Resident


async def main(url: str, token: str) -> None:
    resident = Resident(tone_hz=1000)
    async with httpx.AsyncClient(timeout=20) as client:
        r = await client.post(url, content=await resident.offer(),
                              headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
    if r.status_code != 201:
        print(f"refused {r.status_code} {r.text}", flush=True)
        return
    await resident.accept(r.text)
    print(f"session {r.headers['location']}", flush=True)
    await resident.wait_pictures(3)
    print(f"pictures {len(resident.pictures)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
