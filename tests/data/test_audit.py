"""The audit log: appended entries, listed per guild newest first."""

from __future__ import annotations

from data.repositories import Repositories


async def test_record_and_list_newest_first_per_guild(repos: Repositories) -> None:
    first = await repos.audit.record(
        "lora.add", guild_id=1, user_id=5, target="fox", detail={"sha256": "ab"}
    )
    await repos.audit.record("lora.add", guild_id=2, user_id=5, target="cat")
    second = await repos.audit.record(
        "lora.rename", guild_id=1, user_id=6, target="fox", detail={"to": "fox2"}
    )
    entries = await repos.audit.list_for_guild(1)
    assert [e.id for e in entries] == [second.id, first.id]
    assert entries[0].detail == {"to": "fox2"}
    assert (entries[1].action, entries[1].user_id, entries[1].target) == ("lora.add", 5, "fox")
    assert entries[1].created_at <= entries[0].created_at
    assert [e.id for e in await repos.audit.list_for_guild(1, before=second.id)] == [first.id]
    assert [e.id for e in await repos.audit.list_for_guild(1, limit=1)] == [second.id]
