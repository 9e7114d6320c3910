"""In-flight sharing: concurrent requests for one new prefix compute it once."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import torch

from promptcache.prefix import CommitReport, PrefixCache, PrefixMatch
from tests.prefix.helpers import empty_out, kv_for, make_cache

PROMPT = list(range(200, 232))  # 8 blocks
JOIN_SECONDS = 30.0


class _Worker(threading.Thread):
    """Runs ``body`` on a thread and keeps its result or exception for the test."""

    def __init__(self, body: Callable[[], PrefixMatch]) -> None:
        super().__init__(daemon=True)
        self._body = body
        self.result: PrefixMatch | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._body()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> PrefixMatch:
        self.join(JOIN_SECONDS)
        assert not self.is_alive(), "worker did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _wait_until_waiting(cache: PrefixCache, waiters: int) -> None:
    """Block until ``waiters`` threads wait for in-flight blocks (bounded)."""
    for _ in range(2000):
        if cache.requests_waiting >= waiters:
            return
        threading.Event().wait(0.005)
    raise AssertionError("no thread started waiting")


def test_second_request_waits_for_the_first_then_hits_every_block() -> None:
    cache = make_cache()
    owner = cache.match(PROMPT, salt="")
    assert owner.num_tokens == 0
    assert cache.claims_in_flight == 8

    waiter = _Worker(lambda: cache.match(PROMPT, salt=""))
    waiter.start()
    _wait_until_waiting(cache, 1)
    assert waiter.is_alive()
    cache.commit(owner, PROMPT, kv_for(PROMPT))
    cache.release(owner)

    second = waiter.finish()
    assert second.num_tokens == 32
    assert cache.claims_in_flight == 0  # nothing left to compute: nothing claimed
    out = empty_out(32)
    cache.gather(second, out)
    assert torch.equal(out, kv_for(PROMPT))
    report = cache.commit(second, PROMPT, kv_for(PROMPT))
    cache.release(second)
    assert report.tokens_written == 0
    assert cache.blocks_in_use == 0


def test_n_concurrent_identical_prefixes_write_once_and_read_n_minus_1() -> None:
    cache = make_cache()
    start = threading.Barrier(4)
    reports: list[CommitReport] = []
    lock = threading.Lock()

    def request() -> PrefixMatch:
        start.wait(JOIN_SECONDS)
        match = cache.match(PROMPT, salt="")
        try:
            out = empty_out(len(PROMPT))
            cache.gather(match, out)
            report = cache.commit(match, PROMPT, kv_for(PROMPT))
            with lock:
                reports.append(report)
            return match
        finally:
            cache.release(match)

    workers = [_Worker(request) for _ in range(4)]
    for worker in workers:
        worker.start()
    hits = sorted(worker.finish().num_tokens for worker in workers)
    assert hits == [0, 32, 32, 32]
    assert sorted(report.tokens_written for report in reports) == [0, 0, 0, 32]
    assert (cache.blocks_in_use, cache.claims_in_flight) == (0, 0)


def test_owner_that_fails_hands_the_blocks_to_the_waiter() -> None:
    cache = make_cache()
    owner = cache.match(PROMPT, salt="")
    waiter = _Worker(lambda: cache.match(PROMPT, salt=""))
    waiter.start()
    _wait_until_waiting(cache, 1)
    cache.release(owner)  # e.g. the owner's forward pass raised
    second = waiter.finish()
    assert second.num_tokens == 0
    assert cache.claims_in_flight == 8  # the waiter computes them now
    cache.release(second)
    assert cache.claims_in_flight == 0


def test_waiting_is_only_for_the_shared_part_of_a_longer_prompt() -> None:
    cache = make_cache()
    owner = cache.match(PROMPT[:16], salt="")
    longer = _Worker(lambda: cache.match(PROMPT, salt=""))
    longer.start()
    _wait_until_waiting(cache, 1)
    cache.commit(owner, PROMPT[:16], kv_for(PROMPT[:16]))
    cache.release(owner)
    second = longer.finish()
    assert second.num_tokens == 16
    assert cache.claims_in_flight == 4  # the 4 blocks past the shared 16 tokens
    cache.release(second)


def test_no_wait_when_the_claimed_overlap_is_below_min_cache_tokens() -> None:
    cache = make_cache(min_cache_tokens=8)
    owner = cache.match(PROMPT, salt="")
    barely = [*PROMPT[:4], *range(900, 920)]  # shares one block (4 tokens < 8)
    other = cache.match(barely, salt="")  # same thread: returns at once
    assert other.num_tokens == 0
    assert cache.claims_in_flight == 8 + 5  # the other claimed its own 5 blocks
    cache.release(other)
    cache.release(owner)
    assert cache.claims_in_flight == 0


def test_cancel_stops_the_wait_and_claims_nothing() -> None:
    cache = make_cache()
    owner = cache.match(PROMPT, salt="")
    cancel = threading.Event()
    waiter = _Worker(lambda: cache.match(PROMPT, salt="", cancel=cancel))
    waiter.start()
    _wait_until_waiting(cache, 1)
    cancel.set()
    cancelled = waiter.finish()
    assert cancelled.num_tokens == 0
    cache.release(cancelled)
    assert cache.claims_in_flight == 8  # still the owner's
    cache.release(owner)
    assert (cache.blocks_in_use, cache.claims_in_flight) == (0, 0)


def test_wait_is_bounded_by_inflight_wait_seconds() -> None:
    cache = make_cache(inflight_wait_seconds=0.0)
    owner = cache.match(PROMPT, salt="")
    impatient = cache.match(PROMPT, salt="")  # same thread: would deadlock if it waited
    assert impatient.num_tokens == 0
    # Both compute; the owner stores, the other finds its blocks already there.
    assert cache.commit(owner, PROMPT, kv_for(PROMPT)).tokens_written == 32
    assert cache.commit(impatient, PROMPT, kv_for(PROMPT)).tokens_written == 0
    cache.release(owner)
    cache.release(impatient)
    assert cache.stats().blocks_used == 8
    assert (cache.blocks_in_use, cache.claims_in_flight) == (0, 0)


def test_other_tenant_does_not_wait_for_claims() -> None:
    cache = make_cache()
    owner = cache.match(PROMPT, salt="a")
    other = cache.match(PROMPT, salt="b")  # same thread: returns at once
    assert other.num_tokens == 0
    assert cache.claims_in_flight == 16
    cache.release(owner)
    cache.release(other)


def test_concurrent_requests_under_eviction_pressure_always_read_their_own_prefix() -> None:
    """Threads hammer a small cache with overlapping prompts: every hit is exact."""
    cache = make_cache(budget_blocks=10, min_cache_tokens=4)
    errors: list[str] = []

    def client(seed: int) -> PrefixMatch:
        generator = torch.Generator().manual_seed(seed)
        last: PrefixMatch | None = None
        for _ in range(40):
            stem = int(torch.randint(0, 3, (1,), generator=generator))
            length = int(torch.randint(4, 24, (1,), generator=generator))
            tokens = [stem] * 8 + torch.randint(0, 2, (length,), generator=generator).tolist()
            match = cache.match(tokens, salt=str(stem % 2))
            try:
                out = empty_out(len(tokens))
                cache.gather(match, out)
                expected = kv_for(tokens)
                hit = match.num_tokens
                if not torch.equal(out[:, :, :, :hit], expected[:, :, :, :hit]):
                    errors.append(f"wrong KV for {tokens[: match.num_tokens]}")
                cache.commit(match, tokens, expected)
            finally:
                cache.release(match)
            last = match
        assert last is not None
        return last

    workers = [_Worker(functools.partial(client, seed)) for seed in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.finish()
    assert errors == []
    assert (cache.blocks_in_use, cache.claims_in_flight, cache.requests_waiting) == (0, 0, 0)
    assert cache.stats().blocks_used <= 10
