"""A new SQLite MLflow store's tables, copied from the ones MLflow built once in this test process.

Why: MLflow creates a store's tables by running every one of its schema migrations (alembic) in turn, about a second on
2 idle cores and 5 s at load 7, and nearly every test has a fresh store (`tmp_path/mlflow.db`). The first new store of
the process is built by MLflow's own code into a template; every later new, empty SQLite store receives a
page-for-page copy of it (SQLite's backup API): the same tables, indexes, rows and alembic revision, so the store is
the one MLflow would have made. Anything else (PostgreSQL, an in-memory database, a file that already has tables) goes
through MLflow's own code, and so do the stores that `flexo` subprocesses create.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# the modules that call MLflow's table creation: by attribute (tracking) and by a name imported from it (registry)
_CALLERS = ("mlflow.store.db.utils", "mlflow.store.model_registry.sqlalchemy_store")
_NAME = "_initialize_tables"


class SchemaTemplate:
    """Installs itself as `_initialize_tables` in MLflow's modules once they are imported (`install`)."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._lock = threading.Lock()
        self._original: Callable[[Any], None] | None = None

    def install(self) -> None:
        """Patch every caller already imported (cheap when there is nothing left to do: call it before each test)."""
        if "mlflow" not in sys.modules:
            return
        for name in _CALLERS:
            module = sys.modules.get(name)
            if module is None or getattr(module, _NAME) is self.initialize:
                continue
            if self._original is None:
                self._original = sys.modules[_CALLERS[0]]._initialize_tables
            setattr(module, _NAME, self.initialize)

    def initialize(self, engine: Any) -> None:
        """MLflow's `_initialize_tables(engine)`, from the template where the engine is a new, empty SQLite file."""
        import sqlalchemy

        assert self._original is not None
        database = engine.url.database
        if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
            return self._original(engine)
        if sqlalchemy.inspect(engine).get_table_names():
            return self._original(engine)
        template = self._template()
        source = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
        try:
            with engine.connect() as connection:
                source.backup(connection.connection.driver_connection)
        finally:
            source.close()
        return None

    def _template(self) -> Path:
        """The template database, built by MLflow's own table creation the first time one is needed."""
        import sqlalchemy

        assert self._original is not None
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="flexo-mlflow-schema-"))
            template = self._folder / "template.db"
            if not template.exists():
                building = template.with_suffix(".building")
                building.unlink(missing_ok=True)
                engine = sqlalchemy.create_engine(f"sqlite:///{building}")
                try:
                    self._original(engine)
                finally:
                    engine.dispose()
                building.rename(template)  # only a complete template is ever copied
            return template

    def remove(self) -> None:
        """Delete the template (the end of the session)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
