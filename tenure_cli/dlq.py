"""`tenure dlq list` and `tenure dlq replay`: what the services refused, and sending it back.

A dead letter (shared/kit.py `dlq_row`) is the original message, bytes and key untouched, with
headers saying where it came from and why it was refused: dlq.topic, dlq.partition,
dlq.offset, dlq.service, dlq.reason, dlq.failed_at. Replay re-publishes the original bytes
with the original key to the original topic, once per original message (when several
services refused one message, each wrote its own dead letter), with a header naming the dead
letter it came from. Replaying is safe to repeat: a valid event carries its event_id, and
every consumer that already applied it drops the copy (inbox).

Exit codes: 0 done; 2 bad arguments; 3 the selection matched no dead letter (nothing
replayed); 4 Kafka unreachable or a publish failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.settings import PlatformSettings
from tenure_cli.progress import Progress

EXIT_OK, EXIT_USAGE, EXIT_NOTHING, EXIT_KAFKA = 0, 2, 3, 4
REPLAY_HEADER = "dlq.replay_of"


class KafkaUnavailable(Exception):
    """The broker could not be reached or refused a publish."""


@dataclass(frozen=True)
class DeadLetter:
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def ref(self) -> str:
        """The dead letter's own address, as `--record` takes it: partition:offset."""
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def topic(self) -> str:
        return self.headers.get("dlq.topic", "")

    @property
    def origin(self) -> tuple[str, str, str]:
        h = self.headers
        return (h.get("dlq.topic", ""), h.get("dlq.partition", ""), h.get("dlq.offset", ""))

    @property
    def reason(self) -> str:
        return self.headers.get("dlq.reason", "")

    def envelope(self) -> tuple[str, str]:
        """event_type and event_id when the bytes are JSON with them (never the payload:
        it may hold personal data)."""
        try:
            doc = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return "", ""
        if not isinstance(doc, dict):
            return "", ""
        return str(doc.get("event_type", ""))[:64], str(doc.get("event_id", ""))[:64]

    def summary(self) -> dict[str, Any]:
        event_type, event_id = self.envelope()
        h = self.headers
        return {
            "record": self.ref,
            "service": h.get("dlq.service", ""),
            "topic": self.topic,
            "partition": _int(h.get("dlq.partition")),
            "offset": _int(h.get("dlq.offset")),
            "failed_at": h.get("dlq.failed_at", ""),
            "reason": self.reason,
            "event_type": event_type,
            "event_id": event_id,
            "bytes": len(self.value),
            "replay_of": h.get(REPLAY_HEADER, ""),
        }


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Selection:
    """Which dead letters: explicit records, and/or filters (all must hold)."""

    records: frozenset[str] = frozenset()
    service: str | None = None
    topic: str | None = None
    reason: str | None = None

    def __call__(self, d: DeadLetter) -> bool:
        if self.records and d.ref not in self.records:
            return False
        if self.service and d.headers.get("dlq.service") != self.service:
            return False
        if self.topic and d.topic != self.topic:
            return False
        return not (self.reason and self.reason.lower() not in d.reason.lower())


async def read_dead_letters(
    settings: PlatformSettings, *, keep: Callable[[DeadLetter], bool] = lambda d: True,
    progress: Progress | None = None,
) -> list[DeadLetter]:
    """The dead letters on the DLQ topic now (from the start to the current end offsets) that
    `keep` selects (only those stay in memory: one may be megabytes), read without a
    consumer group so listing never moves anyone's offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
        max_partition_fetch_bytes=5 * 1024 * 1024, fetch_max_bytes=20 * 1024 * 1024,
        request_timeout_ms=15_000, client_id="tenure-dlq",
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        partitions = await _partitions(settings, settings.dlq_topic)
        if not partitions:
            raise KafkaUnavailable(f"topic {settings.dlq_topic} does not exist "
                                   "(run `tenure topics ensure`)")
        parts = [TopicPartition(settings.dlq_topic, p) for p in sorted(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        total = sum(ends.values())
        out: list[DeadLetter] = []
        seen = 0
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        continue
                    letter = DeadLetter(
                        tp.partition, m.offset, m.key, m.value or b"",
                        {k: v.decode(errors="replace") for k, v in (m.headers or [])})
                    seen += 1
                    if keep(letter):
                        out.append(letter)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if progress is not None and total > 10_000:
                progress.update(seen, total)
        out.sort(key=lambda d: (d.headers.get("dlq.failed_at", ""), d.dlq_partition,
                                d.dlq_offset))
        return out
    finally:
        await consumer.stop()


async def _partitions(settings: PlatformSettings, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=15_000, client_id="tenure-dlq")
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot describe {topic}: {exc}") from exc
    finally:
        await admin.close()
    if described.get("error_code"):
        return set()
    return {p["partition"] for p in described.get("partitions", [])}


async def replay(
    settings: PlatformSettings, letters: Iterable[DeadLetter], *,
    progress: Progress | None = None,
) -> list[DeadLetter]:
    """Re-publish each original message once (by original topic, partition, offset)."""
    unique: dict[tuple[str, str, str], DeadLetter] = {}
    for d in letters:
        if not d.topic:
            continue
        unique.setdefault(d.origin, d)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all",
        max_request_size=5 * 1024 * 1024, request_timeout_ms=15_000,
        client_id="tenure-dlq-replay",
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    sent: list[DeadLetter] = []
    try:
        for d in unique.values():
            headers = [(REPLAY_HEADER, f"{settings.dlq_topic}:{d.ref}".encode())]
            await producer.send_and_wait(d.topic, d.value, key=d.key, headers=headers)
            sent.append(d)
            if progress is not None:
                progress.update(len(sent), len(unique))
    except KafkaError as exc:
        raise KafkaUnavailable(f"publish failed after {len(sent)} of {len(unique)}: {exc}") \
            from exc
    finally:
        await producer.stop()
    return sent


# ------------------------------------------------------------------ command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,replay}")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--service", help="only dead letters written by this service "
                       "(profile, scoring, lifecycle, engagement, ingress)")
        p.add_argument("--topic", help="only messages refused from this original topic, "
                       "e.g. tenure.transactions.v1")
        p.add_argument("--reason", metavar="TEXT",
                       help="only reasons containing TEXT (case-insensitive), "
                       "e.g. 'handler error' or 'schema_version'")
        p.add_argument("--record", action="append", default=[], metavar="PARTITION:OFFSET",
                       help="only this dead letter (as `list` prints it); repeatable")

    listing = sub.add_parser(
        "list", help="show dead letters with where they came from and why",
        description="Reads the dead-letter topic from its start (no consumer group, nothing "
        "is consumed) and prints one line per dead letter: its address (PARTITION:OFFSET, "
        "for `replay --record`), the service that refused it, the original topic, "
        "partition and offset, when, the event type and id when readable, and the reason. "
        "Payloads are never printed (they may hold personal data). Exit codes: 0 listed "
        "(also when empty), 2 bad arguments, 4 Kafka unreachable.",
    )
    filters(listing)
    listing.add_argument("--format", choices=["table", "jsonl"], default="table",
                         help="table for people, jsonl (one JSON object a line) for scripts")
    listing.add_argument("--limit", type=int, default=None,
                         help="at most this many (the most recent)")

    replaying = sub.add_parser(
        "replay", help="re-publish selected dead letters to their original topic",
        description="Re-publishes the original bytes and key of each selected dead letter to "
        "the topic it was refused from, once per original message, with a header "
        f"{REPLAY_HEADER}=<dlq topic>:<partition>:<offset>. Use it after the cause is "
        "fixed (a handler bug, a publisher now registered, a raised size limit). Select "
        "with --record and/or filters; replaying every dead letter needs --all. A replayed "
        "event that was applied already is dropped by the consumers' inbox; one that is "
        "still invalid is dead-lettered again. Exit codes: 0 replayed, 2 bad arguments or "
        "no selection, 3 nothing matched, 4 Kafka unreachable or a publish failed.",
    )
    filters(replaying)
    replaying.add_argument("--all", action="store_true",
                           help="replay every dead letter matching the filters (required "
                           "when no --record or filter is given)")
    replaying.add_argument("--dry-run", action="store_true",
                           help="print what would be replayed; publish nothing")


def _selection(args: argparse.Namespace, settings: PlatformSettings) -> Selection:
    topic = args.topic
    if topic and settings.topic_prefix and not topic.startswith(settings.topic_prefix):
        topic = settings.topic(topic)
    for ref in args.record:
        partition, _, offset = ref.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ValueError(f"--record {ref!r}: expected PARTITION:OFFSET, e.g. 0:42")
    return Selection(frozenset(args.record), args.service, topic, args.reason)


def _print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    if not rows:
        print("no dead letters", file=out)
        return
    header = ["record", "service", "origin", "failed_at", "event_type", "reason"]
    lines = [[r["record"], r["service"], f"{r['topic']}[{r['partition']}]@{r['offset']}",
              r["failed_at"][:19], r["event_type"] or "-",
              r["reason"][:120] + (f" (replay of {r['replay_of']})" if r["replay_of"] else "")]
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)).rstrip(),
              file=out)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))


async def run(args: argparse.Namespace, *, out: TextIO | None = None,
              settings: PlatformSettings | None = None) -> int:
    """The whole command in a running event loop (what `main` runs, and what tests call)."""
    out = out or sys.stdout
    settings = settings or PlatformSettings()
    try:
        selection = _selection(args, settings)
    except ValueError as exc:
        print(f"tenure dlq: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dlq_command == "replay" and not (
            args.all or selection.records or selection.service or selection.topic
            or selection.reason):
        print("tenure dlq replay: select what to replay (--record, --service, --topic, "
              "--reason) or pass --all", file=sys.stderr)
        return EXIT_USAGE
    try:
        return await _run(args, selection, settings, out)
    except KafkaUnavailable as exc:
        print(f"tenure dlq: {exc}", file=sys.stderr)
        return EXIT_KAFKA


async def _run(args: argparse.Namespace, selection: Selection, settings: PlatformSettings,
               out: TextIO) -> int:
    started = time.monotonic()
    letters = await read_dead_letters(settings, keep=selection,
                                      progress=Progress("reading the DLQ"))
    if args.dlq_command == "list":
        if args.limit is not None:
            letters = letters[-args.limit:] if args.limit > 0 else []
        rows = [d.summary() for d in letters]
        if args.format == "jsonl":
            for row in rows:
                out.write(json.dumps(row, sort_keys=True) + "\n")
        else:
            _print_table(rows, out)
        return EXIT_OK
    if not letters:
        print("tenure dlq replay: no dead letter matches the selection", file=sys.stderr)
        return EXIT_NOTHING
    if args.dry_run:
        _print_table([d.summary() for d in letters], out)
        print(f"dry run: {len(letters)} dead letters would be replayed", file=sys.stderr)
        return EXIT_OK
    progress = Progress("replaying")
    sent = await replay(settings, letters, progress=progress)
    progress.done(len(sent))
    print(f"replayed {len(sent)} messages ({len(letters)} dead letters selected) in "
          f"{time.monotonic() - started:.1f}s", file=out)
    return EXIT_OK
