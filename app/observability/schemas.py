"""Response bodies of the operations endpoints."""

from __future__ import annotations

from typing import Literal

import msgspec


class Liveness(msgspec.Struct, frozen=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """`checks` maps each dependency to "ok" or to a short reason it failed (no internals)."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


class Version(msgspec.Struct, frozen=True):
    name: str
    version: str
