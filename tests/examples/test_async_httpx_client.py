"""Testing an asyncio application that talks to Amplitude with `httpx.AsyncClient`.

`AliasClient` stands for your application's async client: it sends a batch of mappings and reads
them back. The emulator runs in a background thread of the test process, so an event loop in the
test (here `asyncio.run` inside a plain test; anyio's pytest plugin, `@pytest.mark.anyio`, works
as well) talks to it over a real socket like to Amplitude.

Run it: `python -m pytest tests/examples/test_async_httpx_client.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx

from emulator.client import EmulatorClient


class AliasClient:
    """The application: an async client of Amplitude's User Mapping API."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, secret_key: str) -> None:
        self.http = http
        self.api_key = api_key
        self.secret_key = secret_key

    async def map_users(self, aliases: Mapping[str, str]) -> None:
        """Map each user id to its global user id, in one request."""
        mapping = [{"user_id": user, "global_user_id": to} for user, to in aliases.items()]
        response = await self.http.post(
            "/usermap", data={"api_key": self.api_key, "mapping": json.dumps(mapping)}
        )
        response.raise_for_status()

    async def global_of(self, user_id: str) -> str | None:
        response = await self.http.get(
            "/api/2/usermap",
            params={"user_ids": user_id},
            auth=(self.api_key, self.secret_key),
        )
        response.raise_for_status()
        mapped_to: list[dict[str, Any]] = response.json()[user_id]["mapped_to"]
        return mapped_to[0]["user_id"] if mapped_to else None


def test_async_client_maps_and_reads(amplitude_emulator: EmulatorClient) -> None:
    async def scenario() -> tuple[str | None, str | None]:
        async with httpx.AsyncClient(base_url=amplitude_emulator.base_url, timeout=10) as http:
            client = AliasClient(http, amplitude_emulator.api_key, amplitude_emulator.secret_key)
            await client.map_users({"device-1": "user-1", "device-2": "user-1"})
            return await client.global_of("device-1"), await client.global_of("user-1")

    device_global, user_global = asyncio.run(scenario())

    assert device_global == "user-1"
    assert user_global is None  # user-1 is the global; it is mapped to no one
    amplitude_emulator.assert_mapped("device-2", "user-1")


def test_concurrent_requests(amplitude_emulator: EmulatorClient) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=amplitude_emulator.base_url, timeout=10) as http:
            client = AliasClient(http, amplitude_emulator.api_key, amplitude_emulator.secret_key)
            await asyncio.gather(
                *(client.map_users({f"device-{n}": f"user-{n}"}) for n in range(20))
            )

    asyncio.run(scenario())

    amplitude_emulator.assert_request(path="/usermap", status=200, count=20)
    amplitude_emulator.assert_mapped("device-7", "user-7")
