"""The lean scan: accepts an export or gives up on it, in one process or in several.

Each worker reads the export file itself, in blocks (``ledger._lean_read``), and does
its part of the checks, none of them repeated by another worker:

- the last worker (the only one when there is one): line ends, leaf hashes, chain links
  and the Merkle frontier, a block at a time, reading each line's ``prev`` from its bytes
  (so it parses only the lines of its own share);
- the lines of the blocks of its share (``share_of_slots``): canonical form and the
  entry-local checks (``ledger._lean_shape``);
- every other worker parses every line and keeps the state of the accounts it owns
  (CRC-32 of the name modulo their number): the checks and changes that read the state
  (``ledger._lean_rules``, which says why partitioning by account is exact), and that
  times never go backwards.

An entry passes the reference exactly when it passes every worker's part of the checks,
given the entries before it passed (each part is a subset of the reference's checks and
together they are all of them). So if no worker finds anything, the export verifies;
when one does (at the first line it cannot accept, the others stop soon after), the
caller replays the file again exactly (``ledger._lean_replay``), which names the first
failure as the reference does. Nothing but the path and a few integers goes to a worker,
and only counts, hashes and the frontier come back.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
import zlib
from multiprocessing.connection import Connection
from typing import Any

from ledger._lean_canonical import canonical_value, loads
from ledger._lean_chain import Chain
from ledger._lean_read import Blocks, body_at
from ledger._lean_replay import PROGRESS_EVERY_ENTRIES, Progress
from ledger._lean_rules import apply_state
from ledger._lean_shape import Refer, check_shape
from ledger._lean_state import LeanState
from ledger.verify import Verified

_PREV_KEY = b'"prev":"'

SLOTS = 16  # lines are shared out by blocks: block i goes to share[i % SLOTS]
# What each part costs, in per cent of a one-worker scan (profiled on bench.verify's
# export): parsing a line, the state rules, hashes and links, canonical form and shape.
COST_PARSE, COST_STATE, COST_CHAIN, COST_LOCAL = 10.0, 27.0, 8.0, 27.5


def roles(workers: int) -> tuple[int, int]:
    """(how many workers keep the state, which worker hashes): with two or more, the
    last worker hashes and parses only its share of lines, the others keep the state."""
    return max(1, workers - 1), workers - 1


def share_of_slots(workers: int) -> bytes:
    """Which worker checks canonical form and shape of the lines of block ``i``:
    ``share[i % SLOTS]``, chosen so that the workers' costs come out alike."""
    state_workers, chain_worker = roles(workers)
    load = [COST_PARSE + COST_STATE / state_workers] * state_workers
    if chain_worker >= state_workers:
        load.append(COST_CHAIN)
    else:
        load[chain_worker] += COST_CHAIN
    share = []
    for _ in range(SLOTS):
        worker = min(range(workers), key=lambda w: (load[w], w))
        share.append(worker)
        # a state worker parses every line anyway; the hashing worker only its share
        load[worker] += (COST_LOCAL + (COST_PARSE if worker >= state_workers else 0)) / SLOTS
    return bytes(share)


def verify_in_parallel(
    path: str, workers: int, progress: Progress | None, sizes_wanted: frozenset[int]
) -> Verified | None:
    """The verified export, or None when some worker met a line it did not accept."""
    methods = multiprocessing.get_all_start_methods()
    # fork starts a worker in milliseconds, with the modules already imported
    ctx = (
        multiprocessing.get_context("fork")
        if "fork" in methods
        else multiprocessing.get_context("spawn")
    )
    stop = ctx.Value("q", -1, lock=False)  # a seq some worker could not accept
    receivers: list[Connection] = []
    processes = []
    for worker in range(workers):
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_work,
            args=(path, worker, workers, sorted(sizes_wanted), stop, sender),
            daemon=True,
        )
        process.start()
        sender.close()
        receivers.append(receiver)
        processes.append(process)
    results: list[Any] = []
    try:
        for worker, receiver in enumerate(receivers):
            message = receiver.recv()
            while message[0] == "progress":
                if progress is not None and worker == 0:
                    progress(message[1])
                message = receiver.recv()
            results.append(message)
    except EOFError:  # a worker died: let the one-process replay say why
        results = []
    finally:
        for process in processes:
            process.join()
    if len(results) != workers or any(r[0] != "ok" for r in results):
        return None
    from ledger.verify_lean import verified_of

    count, last_time_us, chain = results[0][1], results[0][3], results[-1][2]
    if any(r[1] != count for r in results):
        return None
    return verified_of(chain, last_time_us)


def verify_alone(
    path: str, progress: Progress | None, sizes_wanted: frozenset[int]
) -> Verified | None:
    """The one-worker scan in this process: the verified export, or None when it met a
    line it did not accept (the exact replay names the failure)."""
    result = _scan(path, 0, 1, sorted(sizes_wanted), _Quiet(), _Progressing(progress))  # type: ignore[arg-type]
    if result[0] != "ok":
        return None
    from ledger.verify_lean import verified_of

    return verified_of(result[2], result[3])


class _Progressing:
    """A worker's pipe, for the scan run in this process: progress goes to the caller."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def send(self, message: tuple[str, int]) -> None:
        if self.progress is not None:
            self.progress(message[1])


class _Quiet:
    """Neither a stop flag that is ever set nor a pipe anyone reads: for one worker's
    share run alone in this process."""

    value = -1

    def send(self, message: object) -> None:
        pass


def worker_cpu_seconds(path: str, workers: int) -> list[float]:
    """The CPU time of each worker's share, run alone one after another in this process:
    what each would need of a core of its own (the benchmark's critical path on a
    machine whose cores are busy with other work)."""
    seconds = []
    for worker in range(workers):
        started = time.process_time()
        result = _scan(path, worker, workers, [], _Quiet(), _Quiet())  # type: ignore[arg-type]
        seconds.append(time.process_time() - started)
        if result[0] != "ok":
            raise RuntimeError(f"worker {worker} of {workers}: {result}")
    return seconds


def _work(
    path: str, worker: int, workers: int, sizes: list[int], stop: Any, sender: Connection
) -> None:
    try:
        result = _scan(path, worker, workers, sizes, stop, sender)
    except Exception as exc:  # a bug here must not pass for a verdict
        result = ("error", repr(exc))
    sender.send(result)
    sender.close()


class _Owned(dict[str, bool]):
    """Account name → owned by this worker; a dict, so a name seen before costs a lookup."""

    def __init__(self, worker: int, workers: int) -> None:
        super().__init__()
        self.worker, self.workers = worker, workers

    def __missing__(self, name: str) -> bool:
        mine = self[name] = zlib.crc32(name.encode()) % self.workers == self.worker
        return mine


def _scan(
    path: str, worker: int, workers: int, sizes: list[int], stop: Any, sender: Connection
) -> tuple[Any, ...]:
    was_collecting = gc.isenabled()
    gc.disable()  # the replay makes no cycles; the collector would walk every lot and hold
    try:
        return _scan_blocks(path, worker, workers, sizes, stop, sender)
    finally:
        if was_collecting:
            gc.enable()


def _scan_blocks(
    path: str, worker: int, workers: int, sizes: list[int], stop: Any, sender: Connection
) -> tuple[Any, ...]:
    state_workers, chain_worker = roles(workers)
    st = LeanState()  # the hashing worker alone keeps no state: last_time_us stays 0
    keeps_state = worker < state_workers
    chain = Chain(sizes) if worker == chain_worker else None
    share = share_of_slots(workers)
    owns = _Owned(worker, state_workers) if keeps_state and state_workers > 1 else None
    seq = 0
    progress_at = PROGRESS_EVERY_ENTRIES
    times = st.times
    with open(path, "rb") as export, open(path, "rb") as again:
        blocks = Blocks(export, keep_offsets=keeps_state)
        offsets = blocks.offsets

        def entry_bytes(seq: int) -> bytes:
            return body_at(again, offsets, seq)

        for index, bodies in enumerate(blocks):
            local = share[index % SLOTS] == worker
            prevs: list[bytes] = []
            keep_prev = prevs.append if chain is not None else None
            try:
                for body in bodies:
                    if local:
                        e = canonical_value(body)
                        if type(e) is not dict:
                            raise Refer
                        time_us = check_shape(e, seq, None, st)
                    elif keeps_state:
                        e = loads(body)
                        cached = times.get(e["time"])
                        time_us = st.time_us(e["time"]) if cached is None else cached
                        if time_us < st.last_time_us:  # checked by check_shape elsewhere
                            raise Refer
                    if keep_prev is not None:
                        # The top-level prev is the last '"prev":"' of a valid line (a
                        # quote inside a string is escaped, so the match is a key ending
                        # in prev, and no key after the top-level prev does). A line
                        # that is not valid fails another check of some worker, and
                        # then the exact replay judges the file anyway.
                        at = body.rfind(_PREV_KEY) + len(_PREV_KEY)
                        keep_prev(body[at : at + 64])
                    if keeps_state:
                        apply_state(e, seq, time_us, st, entry_bytes, owns)
                        st.accept()
                    seq += 1
            except Exception:
                stop.value = seq
                return ("refer", seq)
            if chain is not None:
                # every line's prev is the line before's leaf hash: checked a block at
                # a time, since any failure sends the file to the exact replay anyway
                expected = [chain.prev_hex.encode()]
                chain.feed_block(bodies, expected)
                expected.pop()
                if prevs != expected:
                    stop.value = seq
                    return ("refer", seq)
            if worker == 0 and seq >= progress_at:
                progress_at += PROGRESS_EVERY_ENTRIES
                sender.send(("progress", seq))
            if stop.value >= 0:
                return ("stopped", seq)
        if blocks.tail:  # a last line without its newline
            stop.value = seq
            return ("refer", seq)
    return ("ok", seq, chain, st.last_time_us if keeps_state else None)
