// Chunks of one kernel call shared between the calling thread and helper threads
// that take whatever chunks are left, so a core taken by another thread delays a
// call by at most the chunk a helper holds (work_share.cpp says why not OpenMP).
#pragma once

#include <cstdint>

namespace promptcache {

using ChunkFn = void (*)(void* context, int64_t chunk);

// Runs fn(context, i) once for every i in [0, chunks), on the calling thread and up to
// threads - 1 helpers, and returns when all have run. fn must not throw. Chunks run in
// no particular order; what each computes must not depend on which thread runs it.
void share_chunks(int64_t chunks, int64_t threads, ChunkFn fn, void* context);

template <typename Body>
void share_chunks(int64_t chunks, int64_t threads, Body& body) {
  share_chunks(
      chunks, threads, [](void* context, int64_t chunk) { (*static_cast<Body*>(context))(chunk); },
      &body);
}

}  // namespace promptcache
