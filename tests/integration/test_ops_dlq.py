"""`tenure dlq list` and `tenure dlq replay` on the real broker, run as the command a person or
a script runs, with the exit codes they can rely on."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from services.profile.handlers import HANDLERS, on_transaction_posted
from tenure_cli import dlq
from tenure_cli.main import build_parser
from tests.support import factories as f
from tests.support.platform import Namespace, eventually

TXN = "tenure.transactions.v1"
TENURE = str(Path(sys.executable).with_name("tenure"))


async def tenure(ns: Namespace, *args: str) -> tuple[int, str]:
    """`tenure dlq ...` in this process (the CLI's own code path, without a process start-up
    per call on a busy machine); the real command runs in the tests below."""
    out = io.StringIO()
    code = await dlq.run(build_parser().parse_args(args), out=out, settings=ns.platform())
    return code, out.getvalue()


async def tenure_process(ns: Namespace, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        TENURE, *args, env={**os.environ, **ns.env, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def committed(ns: Namespace, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(o.offset for tp, o in offsets.items() if tp.topic == ns.topic(topic))


async def listed(ns: Namespace, *filters: str) -> list[dict[str, Any]]:
    code, out = await tenure(ns, "dlq", "list", "--format", "jsonl", *filters)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


async def _poison_aware(event, *, uow, now):  # type: ignore[no-untyped-def]
    # A bug that refuses one account: the event is valid, the handler is wrong.
    if event.payload.account_id == "POISON":
        raise RuntimeError("cannot post to account POISON")
    await on_transaction_posted(event, uow=uow, now=now)


async def test_list_shows_dead_letters_and_replay_sends_them_back_once_fixed(
    ns: Namespace,
) -> None:
    poison = f.transaction("C-DLQ", f.now() - f.minutes(5), account_id="POISON")
    await ns.publish(TXN, f.transaction("C-DLQ", f.now() - f.minutes(10)))
    await ns.publish(TXN, poison)
    await ns.publish_raw(TXN, b'{"event_id": "not json', key=b"C-DLQ")

    handlers = {**HANDLERS, "transaction.posted": _poison_aware}
    async with ns.service("profile", parts={"handlers": handlers}):

        async def two_dead_and_committed() -> bool:
            # Stop only once the offsets are committed too, or the next start re-reads (and
            # the fixed handler would apply) the refused event without any replay.
            return len(await ns.read_topic("tenure.dlq.v1")) >= 2 and (
                await committed(ns, ns.settings("profile").consumer_group, TXN) == 3)

        await eventually(two_dead_and_committed, timeout=60, what="two dead letters")
    rows = await listed(ns)
    assert len(rows) == 2
    by_kind = {("handler" if r["reason"].startswith("handler error") else "malformed"): r
               for r in rows}
    bug, garbage = by_kind["handler"], by_kind["malformed"]
    assert bug["service"] == garbage["service"] == "profile"
    assert bug["topic"] == garbage["topic"] == ns.topic(TXN)
    assert bug["event_type"] == "transaction.posted" and bug["event_id"] == str(poison.event_id)
    assert "RuntimeError" in bug["reason"] and garbage["reason"].startswith("malformed JSON")
    assert garbage["event_type"] == "" and garbage["bytes"] == len(b'{"event_id": "not json')
    assert isinstance(bug["offset"], int) and bug["failed_at"]

    # Filters, the table for people (no payload in it), and the limit.
    assert [r["record"] for r in await listed(ns, "--reason", "HANDLER")] == [bug["record"]]
    assert await listed(ns, "--service", "scoring") == []
    assert len(await listed(ns, "--limit", "1")) == 1
    code, table, _ = await tenure_process(ns, "dlq", "list")  # the real command
    assert code == 0 and bug["record"] in table and "handler error" in table
    assert "C-DLQ-CUR" not in table and "amount" not in table  # no payload

    # Scripts can tell a mistake from an empty selection.
    assert (await tenure(ns, "dlq", "replay"))[0] == 2
    assert (await tenure(ns, "dlq", "replay", "--record", "zero:one"))[0] == 2
    assert (await tenure(ns, "dlq", "replay", "--record", "99:99"))[0] == 3
    end_before = len(await ns.read_topic(TXN))
    code, out = await tenure(ns, "dlq", "replay", "--all", "--dry-run")
    assert code == 0 and bug["record"] in out and garbage["record"] in out
    assert len(await ns.read_topic(TXN)) == end_before, "a dry run publishes nothing"

    # The bug is fixed (normal handlers): replay the handler error.
    async with ns.service("profile") as profile:
        code, out = await tenure(ns, "dlq", "replay", "--record", bug["record"])
        assert code == 0
        assert "replayed 1 messages" in out

        async def both_applied() -> bool:
            r = await profile.get("/v1/customers/C-DLQ")
            return r.status_code == 200 and r.json()["activity"]["transaction_count"] == 2

        await eventually(both_applied, timeout=60, what="the replayed transaction applied")
        on_topic = await ns.read_topic(TXN)
        replayed = [m for m in on_topic if "dlq.replay_of" in m["headers"]]
        assert len(replayed) == 1
        assert replayed[0]["raw"] == poison.model_dump_json().encode() or (
            replayed[0]["value"]["event_id"] == str(poison.event_id))
        assert replayed[0]["key"] == b"C-DLQ"
        assert replayed[0]["headers"]["dlq.replay_of"].endswith(":" + bug["record"])

        # Replaying again is harmless: the inbox drops the copy.
        duplicates = profile.runtime.metrics.duplicates
        before = duplicates._value.get()
        assert (await tenure(ns, "dlq", "replay", "--reason", "handler error"))[0] == 0

        async def dropped() -> bool:
            return duplicates._value.get() > before

        await eventually(dropped, timeout=60, what="the second copy dropped as a duplicate")
        r = await profile.get("/v1/customers/C-DLQ")
        assert r.json()["activity"]["transaction_count"] == 2
    # Dead letters stay on the DLQ: it is a record, replay only copies from it. (The outbox
    # relay publishes at least once: a stop between publish and delete repeats a dead letter,
    # which is why replay sends each original message once.)
    origins = {(r["topic"], r["partition"], r["offset"]) for r in await listed(ns)}
    assert origins == {(r["topic"], r["partition"], r["offset"]) for r in (bug, garbage)}


async def test_exit_codes_of_the_real_command(ns: Namespace) -> None:
    # (2 for bad arguments: tests/ops/test_cli.py, in process.)
    code, out, err = await tenure_process(ns, "dlq", "list",
                                          TENURE_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert code == 4 and out == ""
    assert "cannot reach Kafka" in err
    code, _, err = await tenure_process(ns, "dlq", "replay", "--record", "0:999999")
    assert code == 3 and "no dead letter matches" in err
