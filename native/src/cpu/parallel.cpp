#include "qdm/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace qdm {
namespace {

// Workers sleep on a condition variable and claim tasks from a shared atomic counter; the
// calling thread works too. One job at a time (kernels are called from the JS thread).
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    n = std::max(1, n);
    if (n == size() && !workers_.empty()) return;
    stop();
    stopping_ = false;
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this] { loop(); });
  }

  void run(int64_t ntasks, const std::function<void(int64_t)>& fn) {
    if (ntasks <= 0) return;
    if (workers_.empty() || ntasks == 1) { for (int64_t t = 0; t < ntasks; ++t) fn(t); return; }
    std::lock_guard<std::mutex> jobLock(jobMutex_);
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn; ntasks_ = ntasks; next_.store(0); active_ = static_cast<int>(workers_.size()); ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [this] { return active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void work() {
    for (;;) {
      int64_t t = next_.fetch_add(1);
      if (t >= ntasks_) break;
      (*fn_)(t);
    }
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) done_.notify_one();
    }
  }
  void stop() {
    { std::lock_guard<std::mutex> lk(m_); stopping_ = true; }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex m_, jobMutex_;
  std::condition_variable cv_, done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

int defaultThreads() {
  if (const char* e = std::getenv("QDM_NUM_THREADS")) { int n = std::atoi(e); if (n > 0) return n; }
  unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

Pool& pool() { static Pool p(defaultThreads()); return p; }

}  // namespace

int numThreads() { return pool().size(); }
void setNumThreads(int n) { pool().resize(n); }

void parallelTasks(int64_t ntasks, const std::function<void(int64_t)>& fn) { pool().run(ntasks, fn); }

void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1) { fn(0, n); return; }
  pool().run(chunks, [&](int64_t c) { int64_t b = c * grain; fn(b, std::min(n, b + grain)); });
}

}  // namespace qdm
