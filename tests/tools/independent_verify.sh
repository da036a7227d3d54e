#!/usr/bin/env bash
# Check a journal.jsonl without any of the project's code: canonical JSON lines, seq from 0,
# the prev chain, per-unit balance, and the RFC 6962 root (docs/FORMAT.md, docs/AUDITING.md).
#
#   independent_verify.sh JOURNAL [--expect-root HEX [--expect-size N]]
#
# Prints "tree_size N", "head_leaf_hash HEX" and "root_hash HEX" on stdout.
# Exit 0 verified; 1 verification failed (stderr names the line); 2 usage or unreadable input.
# PYTHON picks the interpreter (default python3); it needs the standard library only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

if [[ $# -lt 1 ]]; then
    echo "usage: $(basename "$0") JOURNAL [--expect-root HEX [--expect-size N]]" >&2
    exit 2
fi
if [[ ! -f "$1" || ! -r "$1" ]]; then
    echo "cannot read $1" >&2
    exit 2
fi
if ! command -v "$python" >/dev/null; then
    echo "no Python interpreter: $python (set PYTHON)" >&2
    exit 2
fi

# -I (isolated): no PYTHONPATH, no user site-packages, no script or working directory on
# sys.path, so nothing of the project can be imported even by accident.
exec "$python" -I "$here/independent_verify.py" "$@"
