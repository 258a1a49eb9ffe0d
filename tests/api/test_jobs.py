"""Jobs over the API: contract fields, bad input that changes nothing, invisibility, and
idempotency. The live loop is off here (run_jobs=False) so states stay put; the runner has
its own tests with real processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enclave.api.app import create_app
from enclave.services.context import Context

JOB = {
    "name": "hello",
    "command": ["echo", "hi"],
    "walltime_s": 60,
    "resources": {"nodes": 1, "cpus_per_node": 1},
}


@pytest.fixture
def api(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx=ctx, run_jobs=False)) as c:
        c.headers["Authorization"] = f"Bearer {(ctx.settings.home / 'admin.token').read_text().strip()}"
        yield c


def token(api: TestClient, user: str, label: str) -> dict[str, str]:
    resp = api.post("/v1/tokens", json={"user": user, "label": label})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


@pytest.fixture
def alice(api: TestClient) -> dict[str, dict[str, str]]:
    api.post("/v1/agencies", json={"name": "noaa"})
    api.post("/v1/agencies", json={"name": "doe"})
    api.post(
        "/v1/users",
        json={"name": "alice", "agency": "noaa", "clearance": "TOP SECRET//SI", "roles": ["user"]},
    )
    api.post(
        "/v1/users", json={"name": "bob", "agency": "doe", "clearance": "TOP SECRET//SI", "roles": ["user"]}
    )
    return {
        "secret": token(api, "alice", "SECRET"),
        "low": token(api, "alice", "UNCLASSIFIED"),
        "ts": token(api, "alice", "TOP SECRET//SI"),
        "bob": token(api, "bob", "TOP SECRET//SI"),
    }


def job_count(api: TestClient, headers: dict[str, str]) -> int:
    return int(api.get("/v1/jobs", headers=headers).json()["count"])


def test_submit_contract(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    resp = api.post(
        "/v1/jobs", json={**JOB, "label": "SECRET", "region": "secret-west"}, headers=alice["secret"]
    )
    assert resp.status_code == 201
    job = resp.json()
    assert job["state"] == "pending" and job["label"] == "SECRET"
    shown = api.get(f"/v1/jobs/{job['id']}", headers=alice["secret"]).json()
    for key in ("id", "state", "exit_code", "region", "energy"):
        assert key in shown
    assert set(shown["energy"]) >= {"kwh", "kgco2e", "source"}
    assert shown["region"] == "secret-west"
    assert shown["resources"] == {"nodes": 1, "cpus_per_node": 1, "memory_mb": 1024, "gpus_per_node": 0}


BAD: list[tuple[str, dict[str, Any], int]] = [
    ("negative cpus", {**JOB, "resources": {"cpus_per_node": -1}}, 422),
    ("zero nodes", {**JOB, "resources": {"nodes": 0}}, 422),
    ("negative memory", {**JOB, "resources": {"memory_mb": -5}}, 422),
    ("walltime 0", {**JOB, "walltime_s": 0}, 422),
    ("empty command", {**JOB, "command": []}, 422),
    ("unknown field", {**JOB, "priority": 9}, 422),
    ("unknown region", {**JOB, "region": "mars-1"}, 422),
    ("unaccredited region", {**JOB, "label": "SECRET", "region": "gov-east"}, 422),
    ("unknown label", {**JOB, "label": "ULTRA"}, 422),
    ("too big for any pool", {**JOB, "resources": {"cpus_per_node": 64}}, 422),
    ("unknown qos", {**JOB, "qos": "vip"}, 422),
    ("bad env name", {**JOB, "env": {"1BAD": "x"}}, 422),
    ("label above the session", {**JOB, "label": "TOP SECRET"}, 403),
    ("label below the session (write-down)", {**JOB, "label": "UNCLASSIFIED"}, 403),
    ("urgent without operator role", {**JOB, "qos": "urgent"}, 403),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_submissions_change_nothing(
    api: TestClient, alice: dict[str, dict[str, str]], case: str, body: dict[str, Any], status: int
) -> None:
    before = job_count(api, alice["ts"])
    resp = api.post("/v1/jobs", json=body, headers=alice["secret"])
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["detail"]
    assert job_count(api, alice["ts"]) == before


def test_malformed_json(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    resp = api.post(
        "/v1/jobs", content=b'{"command": [', headers={**alice["secret"], "content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert job_count(api, alice["ts"]) == 0


def test_batch_is_all_or_nothing(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    good = {**JOB, "label": "SECRET"}
    bad = {**JOB, "label": "SECRET", "region": "gov-east"}
    resp = api.post("/v1/jobs/batch", json={"jobs": [good, good, bad]}, headers=alice["secret"])
    assert resp.status_code == 422
    assert job_count(api, alice["ts"]) == 0
    ok = api.post("/v1/jobs/batch", json={"jobs": [good] * 5}, headers=alice["secret"])
    assert ok.status_code == 201 and ok.json()["count"] == 5
    assert job_count(api, alice["ts"]) == 5


def test_dependency_on_invisible_job_is_not_found(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    hidden = api.post("/v1/jobs", json={**JOB, "label": "TOP SECRET//SI"}, headers=alice["ts"]).json()["id"]
    other = api.post("/v1/jobs", json={**JOB, "label": "TOP SECRET//SI"}, headers=alice["bob"]).json()["id"]
    missing = "00000000-0000-0000-0000-000000000000"
    details = []
    for dep in (hidden, other, missing):
        resp = api.post(
            "/v1/jobs", json={**JOB, "depends_on": [{"type": "afterok", "job": dep}]}, headers=alice["secret"]
        )
        assert resp.status_code == 404, resp.text  # invisible, not "forbidden"
        details.append(resp.json()["detail"].replace(dep, "ID"))
    assert len(set(details)) == 1  # indistinguishable from a job that does not exist


def test_jobs_are_invisible_below_their_label_and_to_other_agencies(
    api: TestClient, alice: dict[str, dict[str, str]]
) -> None:
    job = api.post("/v1/jobs", json={**JOB, "label": "SECRET"}, headers=alice["secret"]).json()["id"]
    for who in ("low", "bob"):
        assert api.get(f"/v1/jobs/{job}", headers=alice[who]).status_code == 404
        assert api.get(f"/v1/jobs/{job}/logs", headers=alice[who]).status_code == 404
        assert api.post(f"/v1/jobs/{job}/cancel", headers=alice[who]).status_code == 404
        assert job not in {j["id"] for j in api.get("/v1/jobs", headers=alice[who]).json()["items"]}
    assert api.get(f"/v1/jobs/{job}", headers=alice["ts"]).status_code == 200  # read-up is fine
    assert api.post(f"/v1/jobs/{job}/cancel", headers=alice["ts"]).status_code == 403  # no write-down


def test_idempotency_key_returns_the_same_job(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    body = {**JOB, "label": "SECRET", "idempotency_key": "run-42"}
    first = api.post("/v1/jobs", json=body, headers=alice["secret"]).json()
    again = api.post("/v1/jobs", json=body, headers=alice["secret"]).json()
    assert first["id"] == again["id"]
    assert job_count(api, alice["secret"]) == 1


def test_one_idempotency_key_twice_in_a_batch_is_one_job(
    api: TestClient, alice: dict[str, dict[str, str]]
) -> None:
    keyed = {**JOB, "label": "SECRET", "idempotency_key": "run-7"}
    other = {**JOB, "label": "SECRET", "name": "other"}
    resp = api.post("/v1/jobs/batch", json={"jobs": [keyed, other, keyed]}, headers=alice["secret"])
    assert resp.status_code in (200, 201), resp.text
    first, second, third = resp.json()["jobs"]
    assert first["id"] == third["id"] != second["id"]
    assert job_count(api, alice["secret"]) == 2
    again = api.post("/v1/jobs", json=keyed, headers=alice["secret"]).json()
    assert again["id"] == first["id"] and again["state"] == "pending"


def test_array_and_cancel(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    resp = api.post("/v1/jobs", json={**JOB, "label": "SECRET", "array": 4}, headers=alice["secret"]).json()
    assert len(resp["array_jobs"]) == 4
    envs = [
        api.get(f"/v1/jobs/{j}", headers=alice["secret"]).json()["env"]["ENCLAVE_ARRAY_INDEX"]
        for j in resp["array_jobs"]
    ]
    assert envs == ["0", "1", "2", "3"]
    cancelled = api.post(f"/v1/jobs/{resp['id']}/cancel", headers=alice["secret"]).json()
    assert cancelled["cancel_requested"] is True


def test_audit_records_submission(api: TestClient, alice: dict[str, dict[str, str]]) -> None:
    job = api.post("/v1/jobs", json={**JOB, "label": "SECRET"}, headers=alice["secret"]).json()["id"]
    auditor = token(api, "admin", "SECRET")
    records = api.get("/v1/audit", params={"event": "job.submitted", "limit": 100}, headers=auditor).json()[
        "items"
    ]
    assert [r["object_id"] for r in records] == [job]
    assert api.get("/v1/audit/verify").json()["ok"] is True
