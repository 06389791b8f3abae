"""One file over several connections (issue 14): the bookkeeping, and real transfers against the fake Hub whose CDN
caps each connection, with dropped, stalled, corrupted and expired segments, a server that ignores Range, and
shaping over 16 connections. Loopback only; every wait is bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from test_transfer import REPO, Env, run

from fakehub import FakeHub, Fault
from wangpd.config import DownloadConfig
from wangpd.segments import Ranges, Scheduler, log_path, read_log, write_log

MIB = 1 << 20
BIG = "sub/big.safetensors"
SIZE = 24 * MIB
SEGMENTED = DownloadConfig(
    max_attempts=4,
    backoff_max=0.05,
    stall_timeout=2.0,
    chunk_size=256 * 1024,
    free_space_reserve=0,
    connections_per_file=4,
    segment_size=2 * MIB,
    max_connections=16,
)


# ---- the bookkeeping -----------------------------------------------------------------------------------------


def test_ranges_merge_and_gaps() -> None:
    ranges = Ranges([(10, 20), (30, 40)])
    ranges.add(20, 30)  # touching: one interval
    assert list(ranges) == [(10, 40)] and ranges.prefix() == 0
    ranges.add(0, 5)
    ranges.add(3, 12)
    assert list(ranges) == [(0, 40)] and ranges.prefix() == 40
    ranges.add(50, 60)
    assert ranges.gaps(70) == [(40, 50), (60, 70)] and ranges.total == 50
    assert ranges.covers(0, 40) and not ranges.covers(35, 55)


def test_a_slow_piece_is_split_further_than_an_even_one() -> None:
    scheduler = Scheduler([(0, 24 * MIB)], 8 * MIB)
    slow, fast1, fast2 = (scheduler.next(now=0.0) for _ in range(3))
    for piece in (fast1, fast2):
        piece.position = piece.end  # 8 MiB in 2 s: 4 MiB/s
        scheduler.done(piece, now=2.0)
    slow.position = 1 * MIB  # 0.5 MiB/s: under half the median
    assert scheduler.may_split_later()
    taken = scheduler.next(now=2.0)  # 7 MiB left: too little to split an even piece, not a slow one
    assert (taken.start, taken.end, slow.end) == (4 * MIB + MIB // 2, 8 * MIB, 4 * MIB + MIB // 2)

    even = Scheduler([(0, 16 * MIB)], 8 * MIB)
    a, b = even.next(now=0.0), even.next(now=0.0)
    a.position, b.position = a.end, 8 * MIB + 5 * MIB  # both at 4 MiB/s... a is done
    even.done(a, now=2.0)
    b.position = 8 * MIB + 8 * MIB // 2 + MIB  # b at 2.5 MiB/s: not slow; 3 MiB left
    assert even.next(now=2.0) is None, "an even piece with under 8 MiB left is left to its connection"
    b.position = b.end
    even.done(b, now=3.0)
    assert even.finished and not even.may_split_later()


def test_scheduler_hands_out_pieces_then_splits_the_largest_running_one() -> None:
    scheduler = Scheduler([(0, 100 * MIB)], 40 * MIB)
    a, b, c = scheduler.next(), scheduler.next(), scheduler.next()
    assert (a.start, a.end, b.start, b.end, c.start, c.end) == (0, 40 * MIB, 40 * MIB, 80 * MIB, 80 * MIB, 100 * MIB)
    a.position = 39 * MIB  # nearly done
    c.position = 99 * MIB
    d = scheduler.next()  # nothing left: half of b, the one with most to come
    assert (d.start, d.end, b.end) == (60 * MIB, 80 * MIB, 60 * MIB)
    assert scheduler.next().start == 50 * MIB, "then half of what b still has"
    b.position = 45 * MIB
    scheduler.done(b)  # b's connection dropped: the rest of its (shortened) piece is handed out again
    again = scheduler.next()
    assert (again.start, again.end) == (45 * MIB, 50 * MIB)


def test_the_log_survives_a_torn_line_and_names_its_file(tmp_path: Path) -> None:
    part = tmp_path / "blob.incomplete"
    write_log(part, 1000, "sha", Ranges([(0, 100)]))
    with open(log_path(part), "a") as handle:
        handle.write("200 300\n400 45")  # killed in the middle of a record
    assert list(read_log(part, 1000, "sha")) == [(0, 100), (200, 300)]
    assert list(read_log(part, 1000, "another file's sha")) == [], "not this file's: trust nothing"
    assert read_log(tmp_path / "none.incomplete", 1000, "sha") is None


# ---- real transfers ------------------------------------------------------------------------------------------


def cdn_gets(hub: FakeHub) -> list[Any]:
    return [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]


def check_done(env: Env, result: Any, fake: Any) -> None:
    assert result.path.read_bytes() == fake.content()
    repo_dir = env.cache.repo_dir(REPO)
    assert not list(repo_dir.glob("blobs/*.incomplete*")), "no part and no ranges log left"
    assert not list(repo_dir.glob("blobs/*.wangpd-segments*"))


def test_several_connections_fetch_one_file_faster_and_correct(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 16 * MIB
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=5)
            env = Env(hub, tmp_path)
            started = time.monotonic()
            result = await env.fetch(BIG, SEGMENTED)
            elapsed = time.monotonic() - started
            check_done(env, result, fake)
            assert hub.max_active == 4, "four connections at once"
            assert fake.bytes_served <= SIZE + 2 * MIB, "no byte fetched twice (but a split's bytes in flight)"
            assert all(r.range and r.range.startswith("bytes=") for r in cdn_gets(hub))
            # One connection would take SIZE / 16 MiB/s = 1.5 s.
            assert elapsed < 1.5 * 0.6, f"{elapsed:.2f} s"
            assert env.progress[-1] == SIZE and env.progress == sorted(env.progress)

    run(scenario)


def test_a_server_that_ignores_range_gets_one_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=6)
            hub.inject(REPO, BIG, Fault(ignore_range=True, times=100))
            env = Env(hub, tmp_path)
            result = await env.fetch(BIG, SEGMENTED)
            check_done(env, result, fake)
            assert cdn_gets(hub)[-1].range is None, "the last request is one plain stream"

    run(scenario)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(drop_after=300_000, where=9 * MIB),
        Fault(stall_after=300_000, stall_for=10.0, where=9 * MIB),
    ],
    ids=["dropped", "stalled"],
)
def test_a_dropped_or_stalled_segment_resumes_where_it_stopped(tmp_path: Path, fault: Fault) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=7)
            hub.inject(REPO, BIG, dataclasses.replace(fault))
            env = Env(hub, tmp_path)
            config = dataclasses.replace(SEGMENTED, stall_timeout=0.5)
            result = await env.fetch(BIG, config)
            check_done(env, result, fake)
            # Only that segment's rest, not the file again (a split piece's connection also drops what it had in
            # flight past the split: at most its socket buffers).
            assert fake.bytes_served <= SIZE + 2 * MIB
            assert env.retries == [], "handled inside the attempt: the other connections never stopped"

    run(scenario)


def test_a_flipped_byte_is_caught_and_only_its_piece_fetched_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=8)
            hub.inject(REPO, BIG, Fault(flip_at=3 * MIB + 5, where=3 * MIB + 5))  # in the second 2 MiB piece
            env = Env(hub, tmp_path)
            result = await env.fetch(BIG, SEGMENTED)
            check_done(env, result, fake)
            assert hashlib.sha256(result.path.read_bytes()).hexdigest() == fake.sha256
            # The pieces up to the bad one are fetched again (the Hub gives no per-piece hash), not the file.
            assert fake.bytes_served <= SIZE + 2 * (2 * MIB) + 2 * MIB, "(plus what a split connection had in flight)"

    run(scenario)


def test_an_expired_cdn_link_is_resolved_again_and_the_download_resumes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 32 * MIB
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=9)
            hub.inject(REPO, BIG, Fault(status=403, times=2, where=20 * MIB))
            env = Env(hub, tmp_path)
            result = await env.fetch(BIG, SEGMENTED)
            check_done(env, result, fake)
            resolves = [r for r in hub.requests if r.server == "hub" and "/resolve/" in r.path]
            assert len(resolves) >= 2, "the Hub was asked for a fresh link"
            assert len(env.retries) >= 1 and "refused" in str(env.retries[0][0])
            # What the stopped connections had in flight (socket buffers included), not the file again.
            assert fake.bytes_served <= SIZE + 4 * MIB, "resumed, not restarted"

    run(scenario)


def test_shaping_is_exact_over_sixteen_connections(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 2 * MIB  # 16 x 2 MiB/s: the limit, not the CDN, is what holds them back
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=10)
            env = Env(hub, tmp_path)
            rate = 12 * MIB
            env.limiter.set_rate(rate)
            config = dataclasses.replace(SEGMENTED, connections_per_file=16, segment_size=1 * MIB)
            started = time.monotonic()
            result = await env.fetch(BIG, config)
            elapsed = time.monotonic() - started
            check_done(env, result, fake)
            assert hub.max_active >= 12
            expected = (SIZE - rate * 0.1) / rate  # the limiter lets one 100 ms burst through
            assert expected * 0.95 <= elapsed <= expected * 1.15, f"{elapsed:.2f} s for {expected:.2f} s"

    run(scenario, timeout=30)


def test_a_part_killed_mid_download_resumes_every_segment_forward(tmp_path: Path) -> None:
    """The transfer is cancelled (as a kill would stop it) three times at different moments; each restart asks only
    for what the log says is missing."""

    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 2 * MIB  # 8 MiB/s in all: still running at each stop
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=11)
            env = Env(hub, tmp_path)
            for stop_after in (0.4, 0.3, 0.5):
                task = asyncio.create_task(env.fetch(BIG, SEGMENTED))
                await asyncio.sleep(stop_after)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            before = fake.bytes_served
            assert 0 < before < SIZE
            blobs = env.cache.repo_dir(REPO) / "blobs"
            # Not under the name huggingface_hub resumes by appending at its length: this part has holes.
            assert not list(blobs.glob("*.incomplete")) and len(list(blobs.glob("*.wangpd-segments"))) == 1
            result = await env.fetch(BIG, SEGMENTED)
            check_done(env, result, fake)
            # Lost per stop: what each connection had in flight (a chunk unwritten, the socket's buffers).
            assert fake.bytes_served <= SIZE + 3 * 4 * MIB

    run(scenario, timeout=60)


def test_max_connections_caps_every_transfer_together(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 16 * MIB
            first = hub.add_file(REPO, BIG, size=SIZE, seed=12)
            second = hub.add_file(REPO, "sub/other.safetensors", size=SIZE, seed=13)
            env = Env(hub, tmp_path)
            slots = asyncio.Semaphore(3)  # download.max_connections: 3, below 2 files x 4 connections
            results = await asyncio.gather(
                env.fetch(BIG, SEGMENTED, slots=slots), env.fetch("sub/other.safetensors", SEGMENTED, slots=slots)
            )
            check_done(env, results[0], first)
            check_done(env, results[1], second)
            assert hub.max_active == 3

    run(scenario)


def test_a_slow_connections_piece_is_split_so_it_does_not_finish_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeHub() as hub:
            hub.per_connection_rate = 16 * MIB
            fake = hub.add_file(REPO, BIG, size=SIZE, seed=14)
            hub.inject(REPO, BIG, Fault(rate=MIB, where=1))  # the first piece's connection crawls at 1 MiB/s
            env = Env(hub, tmp_path)
            config = dataclasses.replace(SEGMENTED, segment_size=8 * MIB, connections_per_file=3)
            started = time.monotonic()
            result = await env.fetch(BIG, config)
            elapsed = time.monotonic() - started
            check_done(env, result, fake)
            # Alone, the slow piece would take 8 s; split by the free connections, the file is done in under 3 s.
            assert elapsed < 3.0, f"{elapsed:.2f} s"
            assert fake.bytes_served <= SIZE + 4 * MIB

    run(scenario)
