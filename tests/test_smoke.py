from __future__ import annotations

import httpx


def test_map_then_read(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        "/usermap",
        data={"api_key": api_key, "mapping": '[{"user_id":"u1","global_user_id":"g1"}]'},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 200}
    read = client.get("/api/2/usermap", params={"user_ids": ["u1", "g1"]}, auth=(api_key, "s"))
    assert read.json() == {
        "u1": {
            "amplitude_id": 1,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "g1"}],
        },
        "g1": {
            "amplitude_id": 2,
            "mapped_from": [{"amplitude_id": 1, "user_id": "u1"}],
            "mapped_to": [],
        },
    }
