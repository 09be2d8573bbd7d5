"""Webhooks a receiver can trust against replays: every delivery also carries the Standard
Webhooks headers (docs/webhooks.md), checked here with the scheme's own library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.core.test_webhooks import FAST, Receiver
from tests.watched_job import insert_job


@pytest.fixture
def hook():
    made = Receiver([500, 503, 204])  # two failures, then accepted: three tries
    yield made
    made.server.shutdown()


@pytest.fixture
def deliveries(fresh_service_with, hook):
    """The three tries of one delivery (a job cancelled in the queue) and alice's secrets."""
    service = fresh_service_with(**FAST)
    me = service.client.get("/v1/me", headers=service.as_("alice")).json()
    job_id = insert_job(service.settings, status="queued", notify_url=hook.url,
                        notify_status="pending")  # fmt: skip
    assert service.client.post(f"/v1/jobs/{job_id}/cancel", headers=service.as_("alice"))
    hook.wait_for(3)
    return job_id, me, hook.received[:3]


def test_every_try_verifies_with_the_library_under_one_id(deliveries):
    job_id, me, received = deliveries
    secret = me["webhook_standard_secret"]  # the same 32 bytes as webhook_secret
    assert base64.b64decode(secret.removeprefix("whsec_")) == bytes.fromhex(me["webhook_secret"])
    verifier = Webhook(secret)
    ids, attempts = set(), []
    for headers, raw in received:
        payload = verifier.verify(raw, headers)  # signature, and a timestamp within 5 minutes
        assert payload == json.loads(raw) and payload["job"]["id"] == job_id
        ids.add(headers["webhook-id"])
        attempts.append(payload["delivery_attempt"])
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60  # the try's own time
        # The legacy header is still sent, over the body alone, with the hex secret.
        legacy = hmac.new(me["webhook_secret"].encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Lorabox-Signature"], "sha256=" + legacy)
    # One id for the delivery, whichever try reaches the receiver: its dedup key.
    assert len(ids) == 1 and "." not in ids.pop()
    assert attempts == [1, 2, 3]
    assert len({headers["webhook-signature"] for headers, _ in received}) == 3


FORGERIES = {
    "a replay re-dated to pass the age check":
        lambda h, b: (h | {"webhook-timestamp": str(int(time.time()) + 1)}, b),
    "a replay under a new id, to pass dedup":
        lambda h, b: (h | {"webhook-id": h["webhook-id"] + "x"}, b),
    "a changed body": lambda h, b: (h, b.replace(b'"cancelled"', b'"succeeded"')),
    "a ten-minute-old timestamp":
        lambda h, b: (h | {"webhook-timestamp": str(int(time.time()) - 600)}, b),
}  # fmt: skip


def test_a_delivery_altered_to_be_replayed_is_refused(deliveries):
    _, me, received = deliveries
    headers, raw = received[-1]
    verifier = Webhook(me["webhook_standard_secret"])
    verifier.verify(raw, headers)  # the delivery as sent is genuine
    for what, forge in FORGERIES.items():
        forged_headers, forged_body = forge(headers, raw)
        assert (forged_headers, forged_body) != (headers, raw), what
        try:
            verifier.verify(forged_body, forged_headers)
        except WebhookVerificationError:
            continue
        pytest.fail(f"accepted {what}")
