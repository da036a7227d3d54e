"""Double-entry, append-only, hash-chained journal. It knows nothing of the business it records."""
