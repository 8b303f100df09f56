"""Where messages live in Redis, and the few commands each side sends (docs/scale-out.md).

- `dreamcord:batches:<worker>`: the batches sized for one worker, read by the consumer group
  `workers` (XREADGROUP). The worker acknowledges (XACK) after publishing its results and renews
  its claim at each heartbeat; the bot takes back (XAUTOCLAIM) an entry left pending longer
  than the lease, and deletes an entry once its batch is settled.
- `dreamcord:results`, `dreamcord:progress`: replies to the bot, read by the group `bot`;
  progress is lossy and capped (MAXLEN ~).
- `dreamcord:cancel:<batch>`: a key the worker checks between steps.
- `dreamcord:worker:<name>`: a worker's heartbeat, which expires when the worker goes silent.
- `dreamcord:dead`: entries that did not parse, with the reason, for an operator to read.

Every entry holds one field, `m`: a message of pipeline/remote/messages.py. A group that is
gone (Redis restarted without its data) is made again on first use, from the stream's start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from pipeline.errors import UserError
from pipeline.remote.messages import (
    Batch,
    Failure,
    Heartbeat,
    MessageError,
    Progress,
    Result,
    decode,
    encode,
)

log = logging.getLogger(__name__)

PREFIX = "dreamcord"
RESULTS = f"{PREFIX}:results"
PROGRESS = f"{PREFIX}:progress"
DEAD = f"{PREFIX}:dead"
WORKERS_GROUP = "workers"
BOT_GROUP = "bot"
REAPER = "dreamcord-bot"
"""The consumer name the bot claims dead workers' entries under."""
PROGRESS_MAXLEN = 1000
RESULTS_MAXLEN = 10_000
BATCHES_MAXLEN = 100
DEAD_MAXLEN = 1000
FIELD = b"m"


def batches_key(worker: str) -> str:
    return f"{PREFIX}:batches:{worker}"


def heartbeat_key(worker: str) -> str:
    return f"{PREFIX}:worker:{worker}"


def cancel_key(batch_id: str) -> str:
    return f"{PREFIX}:cancel:{batch_id}"


@dataclass(frozen=True)
class Entry:
    """One stream entry as read: where it is, and its message bytes (b"" when it has none)."""

    stream: str
    entry_id: str
    data: bytes


def shown_url(url: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + host).geturl()


class Streams:
    """The Redis commands of both sides, over one asyncio client (it reconnects by itself)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @classmethod
    async def connect(cls, url: str) -> Streams:
        """A client for `url` that answered a PING; UserError (one line) when it did not."""
        try:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
        except ValueError as error:
            raise UserError(f"QUEUE_URL={shown_url(url)} is not a Redis URL: {error}") from None
        try:
            await client.ping()
        except RedisError as error:
            await client.aclose()
            raise UserError(
                f"cannot reach Redis at {shown_url(url)} (QUEUE_URL): {error}; "
                "start the server or correct QUEUE_URL"
            ) from None
        return cls(client)

    async def close(self) -> None:
        await self.client.aclose()

    # The bot's side.

    async def publish_batch(self, batch: Batch) -> str:
        """Add `batch` to its worker's stream; the entry id."""
        entry_id = await self.client.xadd(
            batches_key(batch.worker), {FIELD: encode(batch)}, maxlen=BATCHES_MAXLEN
        )
        return _text(entry_id)

    async def replies(self, consumer: str, block_ms: int) -> list[Entry]:
        """Results and progress not yet read by the bot's group, waiting up to `block_ms`."""
        return await self._read_group(
            BOT_GROUP, consumer, (RESULTS, PROGRESS), count=100, block_ms=block_ms
        )

    async def settle_reply(self, entry: Entry) -> None:
        """Acknowledge and delete a handled reply (results carry PNGs: free them)."""
        await self.client.xack(entry.stream, BOT_GROUP, entry.entry_id)
        await self.client.xdel(entry.stream, entry.entry_id)

    async def cancel(self, batch_id: str, ttl_s: float) -> None:
        await self.client.set(cancel_key(batch_id), b"1", px=max(1, round(ttl_s * 1000)))

    async def heartbeats(self) -> list[Heartbeat]:
        """Every live worker's latest heartbeat; one that does not parse is logged, skipped."""
        keys = [key async for key in self.client.scan_iter(match=heartbeat_key("*"))]
        beats = []
        for key, data in zip(keys, await self.client.mget(keys) if keys else [], strict=True):
            if data is None:
                continue  # expired between SCAN and MGET
            try:
                beat = decode(data if isinstance(data, bytes) else data.encode())
            except MessageError as error:
                log.warning("ignoring the heartbeat at %s: %s", _text(key), error)
                continue
            if not isinstance(beat, Heartbeat) or heartbeat_key(beat.name) != _text(key):
                log.warning("ignoring the heartbeat at %s: not this worker's", _text(key))
                continue
            beats.append(beat)
        return beats

    async def reclaim(self, worker: str, min_idle_s: float) -> list[Entry]:
        """Take back `worker`'s entries pending longer than `min_idle_s` (XAUTOCLAIM), and
        delete them from its stream, so the batches run elsewhere and not here again."""
        stream, claimed, cursor = batches_key(worker), [], "0-0"
        while True:
            try:
                reply = await self.client.xautoclaim(
                    stream, WORKERS_GROUP, REAPER, round(min_idle_s * 1000), cursor, count=100
                )
            except ResponseError as error:
                if _no_group(error):
                    return []  # no worker has read this stream yet
                raise
            cursor, entries = _text(reply[0]), reply[1]
            claimed += [_entry(stream, entry_id, fields) for entry_id, fields in entries]
            if cursor == "0-0":
                break
        if claimed:
            ids = [entry.entry_id for entry in claimed]
            await self.client.xack(stream, WORKERS_GROUP, *ids)
            await self.client.xdel(stream, *ids)
        return claimed

    async def has_batch(self, worker: str, entry_id: str) -> bool:
        """Whether the entry is still in the worker's stream (a Redis restart loses it)."""
        return bool(await self.client.xrange(batches_key(worker), entry_id, entry_id))

    async def forget_batch(self, worker: str, entry_id: str) -> None:
        await self.client.xdel(batches_key(worker), entry_id)

    async def dead_letter(self, entry: Entry, reason: str, group: str) -> None:
        """Move an entry that does not parse to `dreamcord:dead`, and acknowledge it."""
        log.warning("dead-lettering %s %s: %s", entry.stream, entry.entry_id, reason)
        await self.client.xadd(
            DEAD,
            {b"stream": entry.stream, b"id": entry.entry_id, FIELD: entry.data, b"error": reason},
            maxlen=DEAD_MAXLEN,
        )
        await self.client.xack(entry.stream, group, entry.entry_id)

    # The worker's side.

    async def next_batch(self, worker: str, block_ms: int) -> Entry | None:
        """The next batch entry for `worker`, waiting up to `block_ms`; None when none came."""
        entries = await self._read_group(
            WORKERS_GROUP, worker, (batches_key(worker),), count=1, block_ms=block_ms
        )
        return entries[0] if entries else None

    async def ack_batch(self, worker: str, entry_id: str) -> None:
        try:
            await self.client.xack(batches_key(worker), WORKERS_GROUP, entry_id)
        except ResponseError as error:
            if not _no_group(error):
                raise  # a lost group (Redis restarted) has nothing left to acknowledge

    async def renew(self, worker: str, entry_id: str) -> None:
        """Reset the entry's idle time (XCLAIM to itself), so the bot sees the lease kept."""
        try:
            await self.client.xclaim(
                batches_key(worker), WORKERS_GROUP, worker, 0, [entry_id], justid=True
            )
        except ResponseError as error:
            if not _no_group(error):
                raise

    async def publish(self, message: Result | Failure | Progress) -> None:
        if isinstance(message, Progress):
            await self.client.xadd(PROGRESS, {FIELD: encode(message)}, maxlen=PROGRESS_MAXLEN)
        else:
            await self.client.xadd(RESULTS, {FIELD: encode(message)}, maxlen=RESULTS_MAXLEN)

    async def cancelled(self, batch_id: str) -> bool:
        return bool(await self.client.exists(cancel_key(batch_id)))

    async def beat(self, heartbeat: Heartbeat, ttl_s: float) -> None:
        """Publish a heartbeat that expires after `ttl_s` unless renewed."""
        await self.client.set(
            heartbeat_key(heartbeat.name), encode(heartbeat), px=max(1, round(ttl_s * 1000))
        )

    async def sign_off(self, worker: str) -> None:
        await self.client.delete(heartbeat_key(worker))

    async def _read_group(
        self, group: str, consumer: str, streams: tuple[str, ...], count: int, block_ms: int
    ) -> list[Entry]:
        for _attempt in range(2):
            try:
                reply = await self.client.xreadgroup(
                    group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
                )
            except ResponseError as error:
                if not _no_group(error):
                    raise
                for stream in streams:
                    await self._make_group(stream, group)
                continue
            return [
                _entry(_text(stream), entry_id, fields)
                for stream, entries in _stream_items(reply)
                for entry_id, fields in entries
            ]
        return []

    async def _make_group(self, stream: str, group: str) -> None:
        try:
            await self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise


def _stream_items(reply: object) -> list[tuple[object, list[tuple[object, object]]]]:
    """XREADGROUP's reply as (stream, entries) pairs (RESP2 lists or RESP3 maps)."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(reply) if isinstance(reply, list) else []


def _entry(stream: str, entry_id: object, fields: object) -> Entry:
    data = fields.get(FIELD, b"") if isinstance(fields, dict) else b""
    return Entry(stream, _text(entry_id), data if isinstance(data, bytes) else b"")


def _no_group(error: ResponseError) -> bool:
    return str(error).startswith("NOGROUP")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
