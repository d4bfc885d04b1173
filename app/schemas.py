"""What every domain's request bodies and job payloads share: a struct that refuses fields it does not know."""

from __future__ import annotations

import msgspec


class Input(msgspec.Struct, forbid_unknown_fields=True):
    """A request body or a job payload: an unknown field is a 400 that names it, never silently ignored."""
