"""The budget and policy form of the user, group and new-user pages: amounts as money, parsed into the API's body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from app.portal.forms import FormInvalid, parse
from app.tenants.budgets import BudgetRead, BudgetWrite
from app.tenants.money import MoneyError, format_money, parse_money

BUDGET_PERIODS = [
    ("none", "In total (never resets)"),
    ("daily", "Per day (UTC)"),
    ("weekly", "Per week (from Monday, UTC)"),
    ("monthly", "Per month (UTC)"),
]


def budget_values(budget: BudgetRead, currency: str) -> dict[str, Any]:
    """The form's fields for a stored budget: an empty amount is no limit, as is a zero rate."""
    return {
        "quota": "" if budget.quota < 0 else format_money(budget.quota, currency),
        "budget_period": budget.budget_period,
        "rpm_limit": str(budget.rpm_limit or ""),
        "tpm_limit": str(budget.tpm_limit or ""),
        "allowed_models": list(budget.allowed_models),
    }


def typed_budget(form: Mapping[str, Any], allowed_models: list[str]) -> dict[str, Any]:
    """The form's fields as typed, to parse and, if refused, to show again."""
    return {
        "quota": str(form.get("quota") or "").strip(),
        "budget_period": str(form.get("budget_period") or "none"),
        "rpm_limit": str(form.get("rpm_limit") or "").strip(),
        "tpm_limit": str(form.get("tpm_limit") or "").strip(),
        "allowed_models": allowed_models,
    }


def parse_budget_form(values: Mapping[str, Any]) -> BudgetWrite:
    """The API's body from `typed_budget`'s fields. Raises `FormInvalid` with each field's message."""
    errors: dict[str, str] = {}
    quota = -1
    if values["quota"]:
        try:
            quota = parse_money(str(values["quota"]))
        except MoneyError as error:
            errors["quota"] = str(error)
    try:
        data = parse(
            BudgetWrite,
            {
                "budget_period": values["budget_period"],
                "rpm_limit": values["rpm_limit"] or "0",
                "tpm_limit": values["tpm_limit"] or "0",
                "allowed_models": values["allowed_models"],
            },
        )
    except FormInvalid as invalid:
        errors |= invalid.errors
    if errors:
        raise FormInvalid(errors)
    return msgspec.structs.replace(data, quota=quota)
