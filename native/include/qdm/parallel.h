// A persistent thread pool with a blocking parallel_for. Work is split into chunks whose
// boundaries depend only on the range and the grain, never on the thread count, so any
// kernel that reduces per chunk is bit-identical whatever QDM_NUM_THREADS says.
#pragma once
#include <cstdint>
#include <functional>

namespace qdm {
int numThreads();
void setNumThreads(int n);
// Calls fn(begin, end) on disjoint chunks of [0, n) of at most `grain` items (grain >= 1).
void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
// Calls fn(task) for task in [0, ntasks), one task per call, spread over the threads.
void parallelTasks(int64_t ntasks, const std::function<void(int64_t)>& fn);
}  // namespace qdm
