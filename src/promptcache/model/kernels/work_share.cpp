// Sharing one kernel call's chunks between the calling thread and helper threads.
//
// Why not at::parallel_for (OpenMP): it splits the rows evenly and joins every
// thread of the team at the end of each call. A decode step is ~150 such calls;
// on a 2-core machine that also runs the server's event loop, the request
// threads and often the client, one of the two OpenMP threads is regularly
// preempted, and the other then waits at the join for its whole share: a
// competing thread busy 1 ms in 5 made decode steps ~50% slower (measured on an
// AVX2 EPYC). Here the caller takes chunks until none is left and then waits
// only for chunks a helper has already started; a helper that is not running
// simply takes none.
//
// The job lives in one pool, published by a 64-bit ticket: generation (32 bits)
// | chunk count (16) | next unclaimed chunk (16). A chunk is claimed by a
// compare-and-swap on the ticket, which succeeds only while that generation is
// still the current one and has chunks left -- so a helper that read the job's
// function late, just as the next job was being written, can never run it on a
// chunk of the old generation. The caller waits for every claimed chunk before
// it returns, so no helper touches a job's data afterwards.
//
// Helpers spin for a while after each job (the next call of a decode step comes
// tens of microseconds later), then sleep on a futex (std::atomic::wait) until
// a caller bumps `wake`; `sleeping` and the ticket are a seq_cst Dekker pair,
// so a job is never published to a helper that has gone to sleep unseen.

#include "work_share.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace promptcache {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kMostHelpers = 63;
constexpr int64_t kMostChunks = 0xffff;

// How long an idle helper spins before sleeping, and how long a caller spins on a
// helper's chunk before sleeping: PROMPTCACHE_KERNEL_SPIN_US (default 200).
std::chrono::microseconds spin_time() {
  const char* text = std::getenv("PROMPTCACHE_KERNEL_SPIN_US");
  const long micros = text != nullptr ? std::strtol(text, nullptr, 10) : 200;
  return std::chrono::microseconds(std::clamp(micros, 0L, 100000L));
}

struct Pool {
  // The job, written before the ticket that publishes it (release) and read after it
  // (acquire); atomics because a late helper may read them while the next is written.
  std::atomic<ChunkFn> fn{nullptr};
  std::atomic<void*> context{nullptr};
  std::atomic<int64_t> wanted{0};  // helpers this job may use (index < wanted)
  std::atomic<uint64_t> ticket{0};
  std::atomic<int64_t> finished{0};  // chunks the helpers have finished this job
  std::atomic<uint32_t> wake{0};
  std::atomic<int64_t> sleeping{0};  // helpers asleep, or about to be
  std::atomic<bool> caller_asleep{false};
  std::atomic<uint32_t> caller_wake{0};
  std::mutex caller;   // one caller at a time: a second one runs its chunks alone
  int64_t helpers = 0;  // started so far (the caller mutex held)
  std::chrono::microseconds spin = spin_time();
};

std::atomic<Pool*> current_pool{nullptr};

uint64_t generation_of(uint64_t ticket) { return ticket >> 32; }

// The next unclaimed chunk of `generation`, or false when it has none left or is over.
bool claim(Pool& pool, uint64_t generation, int64_t& chunk) {
  uint64_t ticket = pool.ticket.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t next = ticket & 0xffff;
    if (generation_of(ticket) != generation || next >= ((ticket >> 16) & 0xffff)) return false;
    if (pool.ticket.compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      chunk = static_cast<int64_t>(next);
      return true;
    }
  }
}

// The ticket of the first job after generation `seen`: spinning first, then asleep.
uint64_t next_job(Pool& pool, uint64_t seen) {
  const Clock::time_point until = Clock::now() + pool.spin;
  for (int64_t i = 0;; ++i) {
    const uint64_t ticket = pool.ticket.load(std::memory_order_acquire);
    if (generation_of(ticket) != seen) return ticket;
    _mm_pause();
    if ((i & 63) == 63 && Clock::now() >= until) break;
  }
  for (;;) {
    const uint32_t wake = pool.wake.load(std::memory_order_acquire);
    pool.sleeping.fetch_add(1, std::memory_order_seq_cst);
    const uint64_t ticket = pool.ticket.load(std::memory_order_seq_cst);
    if (generation_of(ticket) == seen) pool.wake.wait(wake, std::memory_order_acquire);
    pool.sleeping.fetch_sub(1, std::memory_order_seq_cst);
    const uint64_t now = pool.ticket.load(std::memory_order_acquire);
    if (generation_of(now) != seen) return now;
  }
}

void help(Pool* pool, int64_t index) {
  const std::string name = "pc-kernel-" + std::to_string(index);
  pthread_setname_np(pthread_self(), name.c_str());
  uint64_t seen = generation_of(pool->ticket.load(std::memory_order_acquire));
  for (;;) {
    seen = generation_of(next_job(*pool, seen));
    if (index >= pool->wanted.load(std::memory_order_acquire)) continue;
    const ChunkFn fn = pool->fn.load(std::memory_order_acquire);
    void* const context = pool->context.load(std::memory_order_acquire);
    int64_t chunk = 0;
    while (claim(*pool, seen, chunk)) {
      fn(context, chunk);
      pool->finished.fetch_add(1, std::memory_order_seq_cst);
      if (pool->caller_asleep.load(std::memory_order_seq_cst)) {
        pool->caller_wake.fetch_add(1, std::memory_order_release);
        pool->caller_wake.notify_one();
      }
    }
  }
}

Pool& pool() {
  static const bool registered = [] {
    // A forked child has none of the parent's helpers (and maybe a held mutex): it
    // starts a pool of its own (the parent's is left as it is, never freed).
    pthread_atfork(nullptr, nullptr, [] { current_pool.store(new Pool); });
    current_pool.store(new Pool);
    return true;
  }();
  (void)registered;
  return *current_pool.load();
}

// Waits until the helpers have finished `expected` chunks: a helper's chunk normally
// ends within microseconds, so the caller spins; a helper that was preempted with a
// chunk in hand may take a scheduler slice, so after a while the caller sleeps and
// frees its core, where the scheduler can then run that helper.
void await_helpers(Pool& pool, int64_t expected) {
  const Clock::time_point until = Clock::now() + pool.spin / 10;
  for (int64_t i = 0; pool.finished.load(std::memory_order_acquire) < expected; ++i) {
    _mm_pause();
    if ((i & 63) != 63 || Clock::now() < until) continue;
    const uint32_t wake = pool.caller_wake.load(std::memory_order_acquire);
    pool.caller_asleep.store(true, std::memory_order_seq_cst);
    if (pool.finished.load(std::memory_order_seq_cst) < expected)
      pool.caller_wake.wait(wake, std::memory_order_acquire);
    pool.caller_asleep.store(false, std::memory_order_seq_cst);
  }
}

}  // namespace

void share_chunks(int64_t chunks, int64_t threads, ChunkFn fn, void* context) {
  const int64_t helpers = std::min({threads - 1, chunks - 1, kMostHelpers});
  Pool& shared = pool();
  std::unique_lock<std::mutex> lock(shared.caller, std::try_to_lock);
  if (helpers <= 0 || chunks > kMostChunks || !lock.owns_lock()) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) fn(context, chunk);
    return;
  }
  for (; shared.helpers < helpers; ++shared.helpers)
    std::thread(help, &shared, shared.helpers).detach();
  shared.fn.store(fn, std::memory_order_relaxed);
  shared.context.store(context, std::memory_order_relaxed);
  shared.wanted.store(helpers, std::memory_order_relaxed);
  shared.finished.store(0, std::memory_order_relaxed);
  const uint64_t generation = (generation_of(shared.ticket.load()) + 1) & 0xffffffff;
  shared.ticket.store(generation << 32 | static_cast<uint64_t>(chunks) << 16,
                      std::memory_order_seq_cst);
  if (shared.sleeping.load(std::memory_order_seq_cst) > 0) {
    shared.wake.fetch_add(1, std::memory_order_release);
    shared.wake.notify_all();
  }
  int64_t mine = 0;
  int64_t chunk = 0;
  while (claim(shared, generation, chunk)) {
    fn(context, chunk);
    ++mine;
  }
  await_helpers(shared, chunks - mine);
}

}  // namespace promptcache
