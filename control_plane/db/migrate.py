"""Schema migrations, run from code: the only way the database schema is created or changed.

The alembic environment lives in `migrations/` of the source tree; wheels ship it inside the
package as `control_plane/_migrations`. No alembic.ini is needed: the `Config` is built here.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

import control_plane

_PACKAGED = Path(control_plane.__file__).resolve().parent / "_migrations"
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "migrations"


def migrations_directory() -> Path:
    """Where the alembic environment is: inside the installed package, else the source tree."""
    for candidate in (_PACKAGED, _SOURCE_TREE):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"alembic migrations not found in {_PACKAGED} nor {_SOURCE_TREE}")


def alembic_config(url: str) -> Config:
    """An alembic `Config` for `url`, for `alembic.command` functions (upgrade, revision…)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    # ConfigParser interpolates '%': escape it (percent-encoded passwords), and hand env.py
    # the URL verbatim through the attributes as well.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Create or upgrade the schema of the database at `url` to the newest revision."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
