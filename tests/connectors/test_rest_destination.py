"""The REST destination against a real HTTP receiver on loopback (tests/connectors/servers.py) that stores each
Idempotency-Key once and fails on demand."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import pyarrow as pa
import pytest

from elt.connectors.base import ConnectorError, Credentials, DestinationRefused, DestinationUnavailable
from elt.connectors.destinations import rest
from tests.connectors.rows import as_json, assert_no_row_values, batches, context, rows
from tests.connectors.servers import free_port

RUN = "beds_weekly-20260105T020000"
FAIL = ("status", 503)
PASS = ("pass", 0)


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("REGISTRY_TOKEN", "token-for-the-test")
    monkeypatch.setenv("WRONG_TOKEN", "not-the-token")


def options(receiver, **changes) -> rest.Options:
    values = {"kind": "rest", "url": receiver.url, "batch_rows": 5, "max_attempts": 3, "backoff_seconds": 0.01,
              "timeout_seconds": 10, "credentials": Credentials(env={"token": "REGISTRY_TOKEN"})}
    return rest.Options(**{**values, **changes})


def keys_sent(receiver) -> list[str]:
    return [request.key for request in receiver.requests]


def sha256_of_stored(receiver) -> str:
    bodies = sorted(receiver.stored.values(), key=lambda body: json.loads(body)["batch"])
    return hashlib.sha256(b"".join(bodies)).hexdigest()


def test_batches_arrive_once_each_row_for_row(http_receiver):
    http_receiver.token = "token-for-the-test"
    delivered = rest.open(options(http_receiver)).deliver(context(), batches(rows(12), [4, 7, 1]))

    assert keys_sent(http_receiver) == [f"{RUN}-1", f"{RUN}-2", f"{RUN}-3"]
    assert {r.authorization for r in http_receiver.requests} == {"Bearer token-for-the-test"}
    bodies = [json.loads(http_receiver.stored[f"{RUN}-{n}"]) for n in (1, 2, 3)]
    assert [(b["connector"], b["run_key"], b["batch"], len(b["rows"])) for b in bodies] == [
        ("beds_weekly", RUN, 1, 5), ("beds_weekly", RUN, 2, 5), ("beds_weekly", RUN, 3, 2)]
    assert http_receiver.rows() == as_json(12)
    assert delivered.rows == 12
    assert delivered.bytes == sum(len(body) for body in http_receiver.stored.values())
    assert delivered.sha256 == sha256_of_stored(http_receiver)


def test_a_run_that_fails_at_batch_3_resumes_from_batch_3(http_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    destination = rest.open(options(http_receiver))
    http_receiver.answer_next(PASS, PASS, FAIL, FAIL, FAIL)

    with pytest.raises(DestinationUnavailable, match="did not take batch 3") as failed:
        destination.deliver(context(), batches(rows(23), [23]))
    assert keys_sent(http_receiver) == [f"{RUN}-1", f"{RUN}-2"] + [f"{RUN}-3"] * 3
    assert failed.value.progress["batches"] == 2 and not failed.value.progress["complete"]
    assert "sends from batch 3" in str(failed.value)
    assert_no_row_values(str(failed.value), caplog.text)

    retry = context(resume_from=failed.value.progress)
    assert destination.delivered(retry) is None
    delivered = destination.deliver(retry, batches(rows(23), [10, 13]))

    assert keys_sent(http_receiver)[5:] == [f"{RUN}-3", f"{RUN}-4", f"{RUN}-5"]
    assert http_receiver.rows() == as_json(23)
    assert (delivered.rows, delivered.detail["batches"], delivered.detail["resumed_after"]) == (23, 5, 2)
    assert delivered.sha256 == sha256_of_stored(http_receiver)
    # The engine's next attempt finds the delivery in what it recorded, and sends nothing.
    found = destination.delivered(context(resume_from=delivered.detail))
    assert (found.rows, found.bytes, found.sha256) == (delivered.rows, delivered.bytes, delivered.sha256)


def test_5xx_answers_are_retried(http_receiver):
    http_receiver.answer_next(FAIL, ("status", 502))

    rest.open(options(http_receiver)).deliver(context(), batches(rows(7), [7]))

    assert keys_sent(http_receiver) == [f"{RUN}-1"] * 3 + [f"{RUN}-2"]
    assert http_receiver.rows() == as_json(7)


def test_a_busy_endpoint_is_waited_for_as_long_as_it_asks(http_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    http_receiver.answer_next(("busy", 1))

    rest.open(options(http_receiver)).deliver(context(), batches(rows(5), [5]))

    assert "(HTTP 429); attempt 2 of 3 in 1.0 s" in caplog.text  # not the 0.01 s of backoff_seconds
    assert keys_sent(http_receiver) == [f"{RUN}-1"] * 2 and http_receiver.rows() == as_json(5)


def test_a_timeout_is_retried_and_the_slow_copy_is_not_stored_twice(http_receiver):
    http_receiver.answer_next(("delay", 1.5))

    delivered = rest.open(options(http_receiver, timeout_seconds=0.5)).deliver(context(), batches(rows(5), [5]))
    http_receiver.wait_idle()

    assert keys_sent(http_receiver).count(f"{RUN}-1") == 2
    assert list(http_receiver.stored) == [f"{RUN}-1"]
    assert http_receiver.rows() == as_json(5) and delivered.rows == 5


def test_a_4xx_is_refused_at_once_and_names_no_row_value(http_receiver, caplog):
    caplog.set_level(logging.DEBUG)
    http_receiver.answer_next(PASS, ("status", 422))  # the receiver's refusal echoes the batch it was sent

    with pytest.raises(DestinationRefused) as refused:
        rest.open(options(http_receiver)).deliver(context(), batches(rows(12), [12]))

    message = str(refused.value)
    assert "HTTP 422" in message and http_receiver.url in message and "batch 2" in message
    assert keys_sent(http_receiver) == [f"{RUN}-1", f"{RUN}-2"]  # not retried
    assert refused.value.progress["batches"] == 1
    assert_no_row_values(message, caplog.text)


def test_a_wrong_token_is_refused(http_receiver):
    http_receiver.token = "token-for-the-test"
    destination = rest.open(options(http_receiver, credentials=Credentials(env={"token": "WRONG_TOKEN"})))

    with pytest.raises(DestinationRefused, match="HTTP 401") as refused:
        destination.deliver(context(), batches(rows(3), [3]))
    assert "not-the-token" not in str(refused.value) and http_receiver.stored == {}


def test_an_endpoint_that_is_down_is_unavailable_after_its_attempts(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}/v1/batches"
    destination = rest.open(rest.Options(kind="rest", url=url, max_attempts=2, backoff_seconds=0.01))

    with pytest.raises(DestinationUnavailable, match="in 2 attempts .*connection failed") as down:
        destination.deliver(context(), batches(rows(3), [3]))
    assert down.value.progress["batches"] == 0
    assert_no_row_values(str(down.value), caplog.text)


def test_rows_that_changed_since_the_failed_attempt_are_not_resumed(http_receiver):
    destination = rest.open(options(http_receiver))
    http_receiver.answer_next(PASS, FAIL, FAIL, FAIL)
    with pytest.raises(DestinationUnavailable) as failed:
        destination.deliver(context(), batches(rows(12), [12]))
    sent = len(http_receiver.requests)

    with pytest.raises(ConnectorError, match="not the rows an earlier attempt sent") as changed:
        destination.deliver(context(resume_from=failed.value.progress), batches(rows(12, name="Other"), [12]))
    assert len(http_receiver.requests) == sent
    assert_no_row_values(str(changed.value))


def test_a_value_json_cannot_carry_fails_naming_its_place_not_its_value(http_receiver):
    occupancy = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, float("nan"), 7.5, 8.5]  # row 7: batch 2 with 5-row batches
    data = [batches(rows(9), [9])[0].set_column(3, "occupancy", pa.array(occupancy))]

    with pytest.raises(ConnectorError, match="batch 2, row 7 of the run, column 'occupancy'") as bad:
        rest.open(options(http_receiver)).deliver(context(), data)

    assert "NaN" in str(bad.value) and bad.value.progress["batches"] == 1
    assert keys_sent(http_receiver) == [f"{RUN}-1"]
    assert_no_row_values(str(bad.value))


def test_a_dry_run_counts_and_sends_nothing(http_receiver):
    delivered = rest.open(options(http_receiver)).deliver(context(dry_run=True), batches(rows(12), [12]))

    assert http_receiver.requests == []
    assert (delivered.rows, delivered.detail["batches"], delivered.detail["complete"]) == (12, 3, False)


def test_a_complete_record_is_a_delivery_and_anything_else_is_not(http_receiver):
    destination = rest.open(options(http_receiver))
    complete = {"batches": 1, "batch_rows": 5, "rows": 3, "bytes": 10, "sha256": "ab", "complete": True}

    assert destination.delivered(context()) is None
    assert destination.delivered(context(resume_from={**complete, "complete": False})) is None
    assert dataclasses.astuple(destination.delivered(context(resume_from=complete)))[:4] == (
        http_receiver.url, 3, 10, "ab")


@pytest.mark.parametrize("url, rule", [
    ("ftp://example.org/in", "http:// or https://"),
    ("https://user:secret@example.org/in", "must not hold a login"),
])
def test_urls_are_checked(url, rule):
    with pytest.raises(ValueError, match=rule):
        rest.Options(kind="rest", url=url)
    with pytest.raises(ValueError, match="Extra inputs"):
        rest.Options(kind="rest", url="https://example.org/in", token="inline")
