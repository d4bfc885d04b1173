"""Which channels may serve a call, and in which order to try them (priority tiers, weighted within a tier)."""

from __future__ import annotations

import random
from itertools import groupby
from uuid import UUID

from app.gateway.adapters import ADAPTERS
from app.gateway.caches import ChannelInfo, TokenInfo


def candidate_channels(
    channels: list[ChannelInfo],
    *,
    model: str,
    token: TokenInfo,
    user_groups: frozenset[UUID],
    needs_embeddings: bool = False,
    needs_rerank: bool = False,
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
        chosen.append(channel)
    return chosen


def attempt_order(channels: list[ChannelInfo], rng: random.Random | None = None) -> list[ChannelInfo]:
    """Highest priority tier first; inside a tier, a weighted random order.

    The order inside a tier is a weighted sampling without replacement (Efraimidis-Spirakis): each channel
    draws u^(1/weight) and the largest goes first, so a channel leads in proportion to its weight and the
    rest of the tier follows as fallbacks.
    """
    draw = (rng or random).random
    ordered: list[ChannelInfo] = []
    by_priority = sorted(channels, key=lambda channel: -channel.priority)
    for _, tier in groupby(by_priority, key=lambda channel: channel.priority):
        ordered.extend(sorted(tier, key=lambda channel: draw() ** (1 / channel.weight), reverse=True))
    return ordered
