"""The usage rollups as the log's rows say they must be, summed in Python, and as they are in the database."""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db.provider import NO_ID, UsageLog

_SUMMED = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "overshoot",
    "latency_ms_sum",
)
_ROLLUP_ROWS = "SELECT kind, start, user_id, token_id, model, {} FROM {{}}".format(", ".join(_SUMMED))


def period_start(moment: datetime.datetime, unit: str) -> datetime.datetime:
    moment = moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if unit == "day" else moment


def expected_rollups(rows: list[UsageLog], unit: str, kinds: tuple[str, ...]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The rollup rows the calls make, summed here in Python from the log's rows."""
    found: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        for kind in kinds:
            key = (
                kind,
                period_start(row.created_at, unit),
                (row.user_id or NO_ID) if kind in ("user", "user_model") else NO_ID,
                (row.token_id or NO_ID) if kind == "key" else NO_ID,
                row.model if kind in ("model", "user_model") else "",
            )
            sums = found.setdefault(key, [0] * len(_SUMMED))
            values = (
                1, int(not 200 <= row.status_code <= 299), row.prompt_tokens, row.completion_tokens,
                row.cached_tokens, row.cost, row.overshoot, row.latency_ms,
            )  # fmt: skip
            for index, value in enumerate(values):
                sums[index] += value
    return {key: tuple(sums) for key, sums in found.items()}


async def rollup_rows(session: AsyncSession, table: str) -> dict[tuple[Any, ...], tuple[int, ...]]:
    rows = (await session.execute(text(_ROLLUP_ROWS.format(table)))).all()
    return {
        (kind, start.astimezone(datetime.UTC), user_id, token_id, model): tuple(sums)
        for kind, start, user_id, token_id, model, *sums in rows
    }
