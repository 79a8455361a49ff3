"""SQL bound parameters never reach an error text, and so never a log."""

from __future__ import annotations

import re

import sqlalchemy as sa

from services.kit import db
from services.launcher import ROOT

SECRET = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"


def test_the_engine_factory_hides_bound_parameters_from_errors() -> None:
    engine = db.create_engine("postgresql://u:p@127.0.0.1:1/x")
    assert engine.sync_engine.hide_parameters
    statement = sa.text("UPDATE users SET password_hash = :h").bindparams(h=SECRET)
    compiled = statement.compile(engine.sync_engine)
    error = sa.exc.DBAPIError.instance(
        str(compiled), compiled.params, Exception("boom"), Exception,
        hide_parameters=engine.sync_engine.hide_parameters,
    )  # fmt: skip
    assert SECRET not in str(error)
    assert "hidden due to hide_parameters" in str(error)


def test_no_module_but_the_kit_creates_an_engine() -> None:
    """Every engine comes from services.kit.db.create_engine, so every one hides them."""
    makers = re.compile(r"\b(create_async_engine|create_engine|engine_from_config)\(")
    found = []
    for path in [
        *ROOT.glob("services/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        *ROOT.glob("bench/**/*.py"),
    ]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if makers.search(line) and "db.create_engine(" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}")
    others = [
        f for f in found if not f.startswith(("services/kit/db.py:", "tests/unit/test_db.py:"))
    ]
    assert others == []
