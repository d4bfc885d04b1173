"""The budget and policy form of the user, group and new-user pages: amounts as money, parsed into the API's body."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.portal.forms import FormSubmission, money_field, parse_with_money
from app.portal.web import PortalRequest, Viewer, viewer_actor
from app.tenants.budgets import BudgetKind, BudgetRead, BudgetService, BudgetWrite, policy_models, read_budget

BUDGET_PERIODS = (
    ("none", "In total (never resets)"),
    ("daily", "Per day (UTC)"),
    ("weekly", "Per week (from Monday, UTC)"),
    ("monthly", "Per month (UTC)"),
)


class BudgetForm(msgspec.Struct, frozen=True):
    """What `_budget.html`'s form shows: the stored budget with its use, the choices, the fields' values."""

    budget: BudgetRead
    models: list[tuple[str, str]]
    values: dict[str, Any]
    periods: tuple[tuple[str, str], ...] = BUDGET_PERIODS


async def budget_form(session: AsyncSession, kind: BudgetKind, subject_id: UUID | None, currency: str) -> BudgetForm:
    """The budget form of a user, a group or new users, as stored."""
    budget = await read_budget(session, kind, subject_id)
    models = await policy_models(session, budget)
    return BudgetForm(budget, [(model, model) for model in models], budget_values(budget, currency))


def budget_values(budget: BudgetRead, currency: str) -> dict[str, Any]:
    """The form's fields for a stored budget: an empty amount is no limit, as is a zero rate."""
    return {
        "quota": money_field(budget.quota, currency),
        "budget_period": budget.budget_period,
        "rpm_limit": str(budget.rpm_limit or ""),
        "tpm_limit": str(budget.tpm_limit or ""),
        "max_concurrent": str(budget.max_concurrent or ""),
        "max_streams": str(budget.max_streams or ""),
        "allowed_models": list(budget.allowed_models),
    }


async def submit_budget(
    request: PortalRequest,
    viewer: Viewer,
    budgets: BudgetService,
    session: AsyncSession,
    kind: BudgetKind,
    subject_id: UUID | None,
) -> tuple[dict[str, Any], FormSubmission]:
    """The posted form saved as the budget of `kind` and `subject_id`: (what was typed, to show again if
    refused; the submission, which says whether it was and why)."""
    form = await request.form()
    values = {
        "quota": str(form.get("quota") or "").strip(),
        "budget_period": str(form.get("budget_period") or "none"),
        "rpm_limit": str(form.get("rpm_limit") or "").strip(),
        "tpm_limit": str(form.get("tpm_limit") or "").strip(),
        "max_concurrent": str(form.get("max_concurrent") or "").strip(),
        "max_streams": str(form.get("max_streams") or "").strip(),
        "allowed_models": [str(model) for model in form.getall("allowed_models", [])],
    }
    # An empty rate is no limit; an empty budget too (`parse_with_money`).
    limits = {name: values[name] or "0" for name in ("rpm_limit", "tpm_limit", "max_concurrent", "max_streams")}
    if kind == "group":  # a group's concurrency is not applied, so its form does not offer it
        del limits["max_concurrent"], limits["max_streams"]
    async with FormSubmission(session) as submission:
        data = parse_with_money(BudgetWrite, {**values, **limits}, ("quota",))
        await budgets.set(viewer_actor(viewer, request), kind, subject_id, data)
    return values, submission
