"""What each CLI verb does about the schema (docs/DESIGN.md, "Deployment"):

- ``coalition migrate`` migrates, and says from which revision to which;
- ``serve`` and ``demo`` migrate first (a development database is made by starting
  them) and say so in one line when they changed anything; ``serve --no-migrate``
  does not, and refuses to start on a schema that is not the code's;
- every other verb never migrates: on a schema that is not the code's it stops with one
  line naming both revisions and ``coalition migrate``, and exit status 2.

Only the schema's owner can migrate; the app's role can read the revision and no more.
"""

from __future__ import annotations

import sys

from coalition.migrate import database_revision, head_revision, upgrade_to_head

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
