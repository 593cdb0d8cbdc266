"""Apply the Alembic migrations programmatically (no alembic.ini needed).

The ledger's revisions live in ``migrations/versions``; an extension that owns tables (the
renewal payments) brings its own version location, on its own branch, through the entry-point
group ``policy_ledger.migrations`` (a callable returning the directory), so the ledger never
imports it. :func:`upgrade` applies every branch (``heads``).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

__all__ = ["MIGRATIONS_GROUP", "alembic_config", "downgrade", "upgrade", "version_locations"]

_MIGRATIONS = Path(__file__).with_name("migrations")

MIGRATIONS_GROUP = "policy_ledger.migrations"
"""Entry-point group of extensions' version locations: ``name = "module:callable"``, the
callable returning the directory of the extension's revisions (a branch of its own)."""


def version_locations() -> list[Path]:
    """The ledger's version location, then every installed extension's."""
    extra = sorted(
        (Path(point.load()()) for point in entry_points(group=MIGRATIONS_GROUP)), key=str
    )
    return [_MIGRATIONS / "versions", *extra]


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations (every branch)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join(str(path) for path in version_locations())
    )
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Migrate the database behind ``engine`` up to ``revision`` (default: the latest of every
    branch)."""
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database behind ``engine`` down to ``revision``."""
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
