"""The portal's lists: filter forms whose wrong fields are named, not fatal, and links to the next page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import msgspec

from app.errors import InvalidRequest
from app.keyset import Keyset
from app.portal.forms import FormInvalid, parse

PAGE_SIZE = 50
FilterStruct = TypeVar("FilterStruct", bound=msgspec.Struct)


def filters_from(
    query: Mapping[str, str], names: tuple[str, ...], struct_type: type[FilterStruct]
) -> tuple[FilterStruct, dict[str, str]]:
    """A filter form's query values as `struct_type`; a wrong field is reported and left out, the rest apply."""
    raw = {name: query.get(name, "").strip() for name in names}
    given = {name: value for name, value in raw.items() if value}
    errors: dict[str, str] = {}
    try:
        return parse(struct_type, given), errors
    except FormInvalid as invalid:
        errors |= invalid.errors
    valid = {name: value for name, value in given.items() if name not in errors}
    try:
        return parse(struct_type, valid), errors
    except FormInvalid:
        return struct_type(), errors


def page_cursor(query: Mapping[str, str], errors: dict[str, str]) -> Keyset | None:
    cursor = query.get("cursor")
    if not cursor:
        return None
    try:
        return Keyset.parse(cursor)
    except InvalidRequest as error:
        errors["form"] = error.detail
        return None


def next_page_query(values: Mapping[str, str], last: Keyset | None) -> dict[str, str] | None:
    return None if last is None else {**values, "cursor": last.cursor()}
