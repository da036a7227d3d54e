"""What the CLI's verb groups share: exit codes, pinned keys read from text or @file, and
files written whole or not at all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from coalition.migrate import database_revision, head_revision, upgrade_to_head

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def read_vkey(value: str) -> str:
    """A verifier key given on the command line, as text or as ``@path``."""
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value.strip()


def write_atomically(path: Path, data: bytes) -> None:
    # A reader (or a crash) never sees half a receipt, statement or payment file.
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# What each CLI verb does about the schema:
# What each CLI verb does about the schema (docs/DESIGN.md, "Deployment"):
#
# - ``coalition migrate`` migrates, and says from which revision to which;
# - ``serve`` and ``demo`` migrate first (a development database is made by starting
#   them) and say so in one line when they changed anything; ``serve --no-migrate``
#   does not, and refuses to start on a schema that is not the code's;
# - every other verb never migrates: on a schema that is not the code's it stops with one
#   line naming both revisions and ``coalition migrate``, and exit status 2.
#
# Only the schema's owner can migrate; the app's role can read the revision and no more.


EXIT_SCHEMA_NOT_CURRENT = 2


def migrate_and_say(url: str) -> None:
    """Migrate to the code's revision; one line on stderr when that changed anything."""
    before, after = upgrade_to_head(url)
    if before != after:
        print(f"migrated the database schema from {before or 'empty'} to {after}", file=sys.stderr)


def require_current_schema(url: str) -> None:
    """Return when the database carries the code's revision, else exit with one line."""
    current = database_revision(url)
    wanted = head_revision()
    if current == wanted:
        return
    print(
        f"the database schema is at {current or 'no revision (empty)'}, this code needs "
        f"{wanted}: run 'coalition migrate' (as the schema's owner) first",
        file=sys.stderr,
    )
    raise SystemExit(EXIT_SCHEMA_NOT_CURRENT)
