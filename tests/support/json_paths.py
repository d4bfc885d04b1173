"""Walking and editing JSON documents by path, for the tests that mutate request bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Keys and list indexes from the document's root down to one value.
JsonPath = tuple[str | int, ...]


def leaves_and_branches(value: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, Any]]:
    """Every value inside a JSON document, the document itself included, with where it is."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        yield from leaves_and_branches(item, (*path, key))


def leaves(value: Any) -> Iterator[tuple[JsonPath, Any]]:
    """The scalars inside a JSON document, with where they are."""
    return ((path, item) for path, item in leaves_and_branches(value) if not isinstance(item, dict | list))


def replaced(value: Any, path: JsonPath, new: Any) -> Any:
    """A copy of `value` with `new` at `path` (a missing last key is added); `value` itself is left alone."""
    if not path:
        return new
    head, *rest = path
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = replaced(value.get(head) if isinstance(value, dict) else value[head], tuple(rest), new)
    return copy
