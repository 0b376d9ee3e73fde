"""SQL stays in core/storage: the rest of core talks to the store through core/ports.py's Protocols,
so a use case, the job runner or the card store runs on a fake store as well as on a database.
Billing keeps the ticket rules and reaches the tables only through the unit of work's repositories
(``core.ports.TicketLedger``, implemented in core/storage/tickets.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"
BILLING = ROOT / "billing"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (function-local and TYPE_CHECKING ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def test_only_core_storage_imports_sqlalchemy() -> None:
    offenders = sorted(
        str(p.relative_to(CORE.parent)) for p in CORE.rglob("*.py")
        if "storage" not in p.relative_to(CORE).parts
        and any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in imported_modules(p)))
    assert offenders == [], f"SQLAlchemy outside core/storage: {offenders}"


def imports_sqlalchemy(path: Path) -> bool:
    return any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in imported_modules(path))


def test_billing_imports_no_sqlalchemy() -> None:
    files = sorted(BILLING.rglob("*.py"))
    assert files, "billing/ not found"
    offenders = [str(p.relative_to(ROOT)) for p in files if imports_sqlalchemy(p)]
    assert offenders == [], f"SQLAlchemy in billing (use the unit of work's repositories): {offenders}"


def test_billing_reaches_no_table_or_session() -> None:
    """No table rows, no ``uow.session``: the ledger's reads and writes are repository methods."""
    def touches(path: Path) -> bool:
        return "core.storage.tables" in imported_modules(path) or any(
            isinstance(n, ast.Attribute) and n.attr == "session" for n in ast.walk(ast.parse(path.read_text())))

    offenders = sorted(str(p.relative_to(ROOT)) for p in BILLING.rglob("*.py") if touches(p))
    assert offenders == [], f"billing touches tables or the session directly: {offenders}"


def test_outside_the_core_the_unit_of_work_is_the_ports_protocol() -> None:
    """``Core.uow()`` returns ``core.ports.UnitOfWork``, so billing, the adapters, plugins and the web
    run on the fake store as on the database: none of them imports the SQL unit of work, and billing
    imports nothing from core/storage."""
    offenders = sorted(
        str(p.relative_to(ROOT)) for d in ("billing", "adapters", "plugins", "spacebridge")
        for p in (ROOT / d).rglob("*.py")
        if any(m == "core.storage.uow" or (d == "billing" and m.startswith("core.storage"))
               for m in imported_modules(p)))
    assert offenders == [], f"the SQL unit of work or storage imported directly: {offenders}"


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f() -> None:\n    from sqlalchemy import select\n")
    assert "sqlalchemy" in imported_modules(sneaky)
