"""Composition root: loyalty vocabulary, services, settings, database, migrations, CLI."""
