"""HTML forms into the API's own request structs, with every field's error kept for the page to show."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import msgspec
from litestar.status_codes import HTTP_200_OK, HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ServiceError
from app.tenants.money import MoneyError, format_money, parse_money

T = TypeVar("T", bound=msgspec.Struct)
# The key of the message about the form as a whole (templates show it above the fields).
FORM_WIDE = "form"
_AT_PATH = re.compile(r" - at `\$[^`]*`$")
_FRIENDLY = [
    (re.compile(r"Expected `(?:str|string)` of length >= 1.*"), "This field is required."),
    (re.compile(r"Expected `(?:str|string)` of length <= (\d+).*"), r"At most \1 characters."),
    (re.compile(r"Expected `array` of length >= 1.*"), "Enter at least one."),
    (re.compile(r"Expected `(?:int|float)` >= (-?[\d.]+).*"), r"At least \1."),
    (re.compile(r"Expected `(?:int|float)` <= (-?[\d.]+).*"), r"At most \1."),
    (re.compile(r"Expected `str` matching regex .*"), "Use only the characters this field allows."),
    # `| null`: an optional field, as the edit forms' structs have them.
    (re.compile(r"Expected `int(?: \| null)?`.*"), "Enter a whole number."),
    (re.compile(r"Expected `float(?: \| null)?`.*"), "Enter a number."),
    (re.compile(r"Expected `array` of length <= (\d+).*"), r"At most \1 entries."),
    (re.compile(r"Invalid enum value '(.*)'"), r"'\1' is not one of the choices."),
    (re.compile(r"Invalid RFC3339 encoded datetime.*"), "Enter a date and time."),
    (re.compile(r"Invalid UUID.*"), "Choose one of the listed options."),
    (re.compile(r"Object missing required field.*"), "This field is required."),
]


class FormInvalid(Exception):
    """Field errors for a form, to be shown next to each field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(", ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class FormSubmission:
    """The one way a portal form handler meets a refusal: the form's own (`FormInvalid`, 400) or a service's
    (`ServiceError`, its status, its message under the field it names, else under `form`, the whole-form
    message at the top of the page). Either rolls the transaction back and is kept here for the page; anything
    else propagates to the error pages.

        async with FormSubmission(db_session) as submission:
            data = parse(SomeRequest, shaped(form))
            await some_service.change(data)
        if submission.refused:
            return await self._form_page(..., values=values, errors=submission.errors,
                                         status_code=submission.status_code)
        return see_other(...)

    To adopt it in a handler that catches `FormInvalid` and `ServiceError` itself, rolls back and guesses the
    field from the message: move the `try` body under the `async with`, drop the handlers, render the page from
    `submission.errors` and `submission.status_code`, and give each `raise` in the service the `field=` it is
    about (a refusal without one is shown above the form). A page that reads an ORM row again after the
    rollback refreshes it first (the rollback expired it).
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.refused = False
        self.errors: dict[str, str] = {}
        self.status_code = HTTP_200_OK

    async def __aenter__(self) -> FormSubmission:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if isinstance(error, FormInvalid):
            self.errors, self.status_code = error.errors, HTTP_400_BAD_REQUEST
        elif isinstance(error, ServiceError):
            self.errors, self.status_code = {error.field or FORM_WIDE: error.detail}, error.status_code
        else:
            return False
        await self.session.rollback()
        self.refused = True
        return True


def friendly(message: str) -> str:
    message = _AT_PATH.sub("", message)
    for pattern, replacement in _FRIENDLY:
        if pattern.fullmatch(message):
            return pattern.sub(replacement, message)
    return message


@functools.cache
def _one_field(struct_type: type[msgspec.Struct], name: str) -> type[msgspec.Struct]:
    field = next(field for field in msgspec.structs.fields(struct_type) if field.name == name)
    return msgspec.defstruct(f"{struct_type.__name__}_{name}", [(name, field.type)])


def parse(struct_type: type[T], data: Mapping[str, Any]) -> T:
    """`data` (form values already shaped: lists split, empty optional fields left out) as `struct_type`.

    Each field is checked on its own first, so that every wrong field gets its message, not only the first.
    """
    known = {field.name: field for field in msgspec.structs.fields(struct_type)}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in data.items():
        field = known.get(name)
        if field is None:
            continue
        if value == "" and not field.required:
            continue
        if value == "" and field.required:
            errors[name] = "This field is required."
            continue
        try:
            msgspec.convert({name: value}, _one_field(struct_type, name), strict=False)
        except msgspec.ValidationError as error:
            errors[name] = friendly(str(error))
            continue
        values[name] = value
    for name, field in known.items():
        if field.required and name not in data and name not in errors:
            errors[name] = "This field is required."
    if errors:
        raise FormInvalid(errors)
    try:
        return msgspec.convert(values, struct_type, strict=False)
    except msgspec.ValidationError as error:
        raise FormInvalid({FORM_WIDE: friendly(str(error))}) from None


def parse_with_money(struct_type: type[T], data: Mapping[str, Any], money_fields: tuple[str, ...]) -> T:
    """`parse`, with `money_fields` typed as amounts of money (`5`, `$0.50`) and given to the struct in
    credits; one left empty is no limit (-1). Every wrong field gets its message, the amounts' included."""
    shaped = dict(data)
    errors: dict[str, str] = {}
    for name in money_fields:
        text = str(shaped.get(name) or "").strip()
        try:
            shaped[name] = parse_money(text) if text else -1
        except MoneyError as error:
            errors[name] = str(error)
            del shaped[name]
    try:
        parsed = parse(struct_type, shaped)
    except FormInvalid as invalid:
        raise FormInvalid(invalid.errors | errors) from None
    if errors:
        raise FormInvalid(errors)
    return parsed


def money_field(credits: int, currency: str) -> str:
    """A limit in credits as a form shows it: an amount of money, or empty for no limit."""
    return "" if credits < 0 else format_money(credits, currency)


def lines(value: str | None) -> list[str]:
    """A textarea or comma list: one entry per line or comma, blanks dropped."""
    return [item.strip() for item in re.split(r"[\n,]", value or "") if item.strip()]


def pairs(value: str | None) -> dict[str, str]:
    """`a=b` per line, for mappings such as model aliases; a line without `=` is an error."""
    result: dict[str, str] = {}
    for line in (value or "").splitlines():
        if not line.strip():
            continue
        left, equals, right = line.partition("=")
        if not equals or not left.strip() or not right.strip():
            raise FormInvalid({"model_mapping": f"Write each mapping as name=upstream name (got '{line.strip()}')."})
        result[left.strip()] = right.strip()
    return result
