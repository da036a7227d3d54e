"""The GraphQL API (strawberry): types, resolvers, authorisation, limits. Thin: every
resolver calls one coalition use case or read on SQLAlchemy's async engine (``db``), or a
DataLoader that batches reads of many members or entries into one statement."""
