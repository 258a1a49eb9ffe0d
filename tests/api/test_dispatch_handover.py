"""A handover no region worker takes (issue 13 item 6): given up — reported lost, the record
closed so that no worker can take it afterwards — once no worker of the region has been
connected for WORKER_TIMEOUT_S; kept while a worker is connected (it takes work as it has
room). The mailbox and the worker's sync as in tests/api/test_workers.py, on a fake clock."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from enclave.executors.base import RunState
from enclave.executors.dispatch import WORKER_TIMEOUT_S
from enclave.services.context import Context

from .test_workers import TS, Clock, api, clock, credential, dispatch, dispatcher, row, sync, wctx  # noqa: F401

SECRET = "SECRET"


def test_an_untaken_handover_is_given_up_once_no_worker_is_connected(
    api: TestClient,  # noqa: F811
    wctx: Context,  # noqa: F811
    clock: Clock,  # noqa: F811
) -> None:
    who = credential(api, "secret-west")
    job_id, handle = dispatch(wctx, "secret-west", SECRET)
    assert dispatcher(wctx, "secret-west").poll(handle).state is RunState.QUEUED
    clock.now += timedelta(seconds=WORKER_TIMEOUT_S - 1)
    assert dispatcher(wctx, "secret-west").poll(handle).state is RunState.QUEUED  # not yet
    clock.now += timedelta(seconds=2)
    status = dispatcher(wctx, "secret-west").poll(handle)
    assert status.state is RunState.LOST
    assert (
        status.detail
        == f"lost: no region worker of secret-west was connected to take it within {WORKER_TIMEOUT_S:.0f} s"
    )
    found = row(wctx, job_id)
    assert found is not None and (found.state, found.lost) == ("ended", True)
    # A worker that connects now does not get it: the runner has requeued the job already.
    assert sync(api, who, "secret-west")["start"] == []


def test_a_connected_worker_keeps_the_handovers_it_has_no_room_for_yet(
    api: TestClient,  # noqa: F811
    wctx: Context,  # noqa: F811
    clock: Clock,  # noqa: F811
) -> None:
    who = credential(api, "ts-east")
    sync(api, who, "ts-east", capacity=0)  # connected, full
    job_id, handle = dispatch(wctx, "ts-east", TS)
    for _ in range(4):  # two timeouts' worth, the worker checking in all along
        clock.now += timedelta(seconds=WORKER_TIMEOUT_S / 2)
        sync(api, who, "ts-east", capacity=0)
        assert dispatcher(wctx, "ts-east").poll(handle).state is RunState.QUEUED
    assert [s["job_id"] for s in sync(api, who, "ts-east", capacity=1)["start"]] == [job_id]
