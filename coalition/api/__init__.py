"""The GraphQL API (strawberry): types, resolvers, authorisation, limits. Thin: every
resolver calls one coalition use case or read, in a worker thread with a pooled connection."""
