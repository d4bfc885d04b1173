"""The order a model's channels are tried in, by each routing strategy, and the figures latency routing keeps."""

from __future__ import annotations

import random
from collections import Counter

from uuid_utils.compat import uuid7

from app.gateway.caches import ChannelInfo
from app.gateway.routing import LATENCY_EXPLORATION, ChannelHealth, attempt_order


def channel(name: str, priority: int = 1, weight: int = 1) -> ChannelInfo:
    return ChannelInfo(
        id=uuid7(), name=name, api_format="openai", output_limit_parameter="max_tokens", base_url="",
        api_version=None, keys=("",), priority=priority, weight=weight, models=frozenset({"m"}), model_mapping={},
        scope="tenant", owner_id=None, group_id=None, rate_limit=0, quota=-1,
    )  # fmt: skip


def names(order: list[ChannelInfo]) -> list[str]:
    return [item.name for item in order]


def test_priority_puts_the_highest_tier_first_whatever_the_weights() -> None:
    low, high = channel("low", priority=1, weight=10_000), channel("high", priority=9)
    rng = random.Random(1)  # noqa: S311 - seeded, for a repeatable test
    assert {names(attempt_order([low, high], rng))[0] for _ in range(50)} == {"high"}


def test_within_a_tier_each_channel_leads_in_proportion_to_its_weight_and_the_rest_follow() -> None:
    heavy, middle, light = channel("heavy", weight=5), channel("middle", weight=3), channel("light", weight=2)
    other_tier = channel("fallback", priority=0, weight=100)
    rng = random.Random(7)  # noqa: S311 - seeded, for a repeatable test
    draws = 40_000
    orders = [attempt_order([light, other_tier, heavy, middle], rng) for _ in range(draws)]
    first = Counter(order[0].name for order in orders)
    # Binomial standard deviations here are at most 0.0025: a tolerance of 0.01 is four of them.
    for name, share in (("heavy", 0.5), ("middle", 0.3), ("light", 0.2)):
        assert abs(first[name] / draws - share) <= 0.01, first
    # Every channel of the tier is tried before the lower tier, which comes last.
    assert all(sorted(names(order[:3])) == ["heavy", "light", "middle"] for order in orders)
    assert {order[3].name for order in orders} == {"fallback"}


def test_latency_tries_an_unmeasured_channel_first_then_the_fastest() -> None:
    fast, slow, new = channel("fast"), channel("slow"), channel("new")
    health = ChannelHealth()
    health.answered(fast.id, 10)
    health.answered(slow.id, 60)
    rng = random.Random(2)  # noqa: S311 - seeded, for a repeatable test
    leaders = Counter(
        names(attempt_order([slow, fast, new], rng, strategy="latency", health=health))[0] for _ in range(400)
    )
    assert leaders["new"] >= 400 * (1 - 2 * LATENCY_EXPLORATION)
    health.answered(new.id, 30)
    leaders = Counter(
        names(attempt_order([slow, fast, new], rng, strategy="latency", health=health))[0] for _ in range(400)
    )
    # The fastest leads but for the few calls that measure the others again.
    assert 400 * (1 - 2 * LATENCY_EXPLORATION) <= leaders["fast"] < 400
    assert leaders["slow"] + leaders["new"] > 0


def test_latency_is_a_moving_average_that_follows_a_change() -> None:
    health, item = ChannelHealth(), channel("c")
    health.answered(item.id, 100)
    health.answered(item.id, 0)
    assert health.latency_ms[item.id] == 80
    for _ in range(30):
        health.answered(item.id, 10)
    assert 10 <= health.latency_ms[item.id] < 11


def test_least_in_flight_prefers_the_idle_channel_then_priority() -> None:
    busy, idle, low = channel("busy", priority=9), channel("idle", priority=5), channel("low", priority=1)
    health = ChannelHealth()
    health.started(busy.id)
    order = attempt_order([low, busy, idle], strategy="least_in_flight", health=health)
    assert names(order) == ["idle", "low", "busy"]
    health.ended(busy.id)
    assert health.in_flight == {}
    assert names(attempt_order([low, busy, idle], strategy="least_in_flight", health=health)) == ["busy", "idle", "low"]
