"""Which channels may serve a call, and in which order to try them: by priority tiers (weighted within a tier),
by lowest observed latency, or by fewest calls in flight."""

from __future__ import annotations

import random
from itertools import groupby
from uuid import UUID

from app.gateway.adapters import ADAPTERS
from app.gateway.caches import ChannelInfo, TokenInfo

# Weight of the newest latency in a channel's moving average: about the last ten calls count.
LATENCY_SMOOTHING = 0.2
# A latency-routed call sometimes leads with another channel than the fastest, so that a channel that was
# slow once gets measured again and can win back its traffic.
LATENCY_EXPLORATION = 0.05


def candidate_channels(
    channels: list[ChannelInfo],
    *,
    model: str,
    token: TokenInfo,
    user_groups: frozenset[UUID],
    needs_embeddings: bool = False,
    needs_rerank: bool = False,
    needs_media: bool = False,
) -> list[ChannelInfo]:
    """Enabled channels of the token's tenant that serve `model` and that this token and user may use."""
    chosen = []
    for channel in channels:
        if model not in channel.models:
            continue
        if token.allowed_channels and channel.id not in token.allowed_channels:
            continue
        if channel.scope == "personal" and channel.owner_id != token.user_id:
            continue
        if channel.scope == "group" and channel.group_id not in user_groups:
            continue
        if needs_embeddings and not ADAPTERS[channel.api_format].supports_embeddings:
            continue
        if needs_rerank and not ADAPTERS[channel.api_format].supports_rerank:
            continue
        if needs_media and not ADAPTERS[channel.api_format].supports_media:
            continue
        chosen.append(channel)
    return chosen


class ChannelHealth:
    """What this worker has seen of each channel: a moving average of its answer time, and its calls in flight.

    Kept in process (no round trip on the hot path): each worker routes by what it has measured itself.
    """

    def __init__(self) -> None:
        self.latency_ms: dict[UUID, float] = {}
        self.in_flight: dict[UUID, int] = {}

    def started(self, channel_id: UUID) -> None:
        self.in_flight[channel_id] = self.in_flight.get(channel_id, 0) + 1

    def ended(self, channel_id: UUID) -> None:
        left = self.in_flight.get(channel_id, 0) - 1
        if left > 0:
            self.in_flight[channel_id] = left
        else:
            self.in_flight.pop(channel_id, None)

    def answered(self, channel_id: UUID, milliseconds: float) -> None:
        previous = self.latency_ms.get(channel_id)
        self.latency_ms[channel_id] = (
            milliseconds if previous is None else previous + LATENCY_SMOOTHING * (milliseconds - previous)
        )


def attempt_order(
    channels: list[ChannelInfo],
    rng: random.Random | None = None,
    *,
    strategy: str = "priority",
    health: ChannelHealth | None = None,
) -> list[ChannelInfo]:
    """The order to try `channels` in, by the model's routing strategy.

    `priority`: highest priority tier first; inside a tier, a weighted sampling without replacement
    (Efraimidis-Spirakis): each channel draws u^(1/weight) and the largest goes first, so a channel leads in
    proportion to its weight and the rest of the tier follows as fallbacks.
    `latency`: lowest moving-average answer time first; a channel not yet measured goes first, to be measured.
    `least_in_flight`: fewest calls in flight from this worker first, priority breaking ties.
    """
    draw = (rng or random).random
    if strategy == "latency" and health is not None:
        observed = health.latency_ms
        ordered = sorted(channels, key=lambda channel: (observed.get(channel.id, 0.0), draw()))
        if len(ordered) > 1 and draw() < LATENCY_EXPLORATION:
            ordered.insert(0, ordered.pop(1 + int(draw() * (len(ordered) - 1))))
        return ordered
    if strategy == "least_in_flight" and health is not None:
        busy = health.in_flight
        return sorted(channels, key=lambda channel: (busy.get(channel.id, 0), -channel.priority, draw()))
    ordered = []
    by_priority = sorted(channels, key=lambda channel: -channel.priority)
    for _, tier in groupby(by_priority, key=lambda channel: channel.priority):
        ordered.extend(sorted(tier, key=lambda channel: draw() ** (1 / channel.weight), reverse=True))
    return ordered
