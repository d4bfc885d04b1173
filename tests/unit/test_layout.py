"""The layout's import rules (docs/architecture.md, "Who may import what"), checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    """The modules a file imports, absolute, at any depth (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def is_controller(module: str) -> bool:
    # `app.tenants.platform_controllers`: a domain's second set of routes, kept apart, follows the same rules.
    return module.endswith((".controllers", "_controllers")) or ".controllers." in module


def test_the_rules_see_the_code() -> None:
    assert len(sources("app")) > 50
    assert "app.gateway.engine" in imports_of(ROOT / "app/gateway/v1.py") | imports_of(ROOT / "app/main.py")


@pytest.mark.parametrize("folder", ["db", "migrations"])
def test_the_database_layer_imports_nothing_of_the_app(folder: str) -> None:
    offenders = {
        module_name(path): sorted(name for name in imports_of(path) if name == "app" or name.startswith("app."))
        for path in sources(folder)
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_only_the_app_and_the_portal_router_import_controllers() -> None:
    # What two areas share lives in a service or plumbing module, never in a controller.
    allowed = {"app.main", "app.portal.router"}
    offenders = {
        module_name(path): sorted(name for name in imports_of(path) if is_controller(name))
        for path in sources("app")
        if module_name(path) not in allowed
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_only_the_asgi_entry_point_builds_the_app_from_main() -> None:
    importers = {module_name(path) for path in sources("app") if "app.main" in imports_of(path)}
    assert importers == {"app.asgi"}


def test_services_and_the_gateway_engine_know_nothing_of_http_frameworks() -> None:
    # Logic stays callable from the API, the portal, the worker and the CLI alike.
    logic = [
        path
        for path in sources("app")
        if path.parent.name in {"adapters", "dialects"}
        or (
            path.stem in {"services", "tasks", "admin", "engine", "caches", "limits", "routing", "usage"}
            and not is_controller(module_name(path))
        )
    ]
    assert len(logic) >= 20
    offenders = {
        module_name(path): sorted(name for name in imports_of(path) if name.split(".")[0] == "litestar")
        for path in logic
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_portal_pages_read_and_change_through_services_never_db_models() -> None:
    # A page that queried the models itself would skip the rule its service keeps for the API too.
    portal = [path for path in sources("app/portal") if is_controller(module_name(path)) or path.name == "web.py"]
    assert len(portal) >= 10
    offenders = {
        module_name(path): sorted(name for name in imports_of(path) if name == "db" or name.startswith("db."))
        for path in portal
    }
    assert {module: names for module, names in offenders.items() if names} == {}
