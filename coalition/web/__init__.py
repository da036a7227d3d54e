"""The web console: server-rendered pages by role at ``/`` over the GraphQL schema's own
resolvers (so the same use cases and the same authorisation), sessions, and the
vendored browser assets (docs/DESIGN.md, "The web console")."""
