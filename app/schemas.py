"""What every domain's bodies share: the input struct that refuses unknown fields, and rows read as responses."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class Input(msgspec.Struct, forbid_unknown_fields=True):
    """A request body or a job payload: an unknown field is a 400 that names it, never silently ignored."""


def read_as(schema: type[S], row: object, **fields: Any) -> S:
    """The response struct `schema` filled from `row` (an ORM row): its attributes of the same names, and
    `fields` for what the row names otherwise or what is computed (`text=memory.memory_text`).

    The one way a row becomes a response body: types are checked as msgspec converts, so a column whose
    type drifts from its schema fails loudly here rather than in a client.
    """
    if not fields:
        return msgspec.convert(row, schema, from_attributes=True)
    named = (name for name in schema.__struct_fields__ if name not in fields and hasattr(row, name))
    return msgspec.convert({name: getattr(row, name) for name in named} | fields, schema, from_attributes=True)
