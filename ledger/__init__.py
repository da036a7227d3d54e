"""Double-entry, append-only, hash-chained journal. Knows nothing of loyalty."""
