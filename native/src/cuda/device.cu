// The CUDA backend's runtime: its own non-blocking stream, a stream-ordered caching allocator,
// pinned staging buffers for host transfers, and CUDA graph capture with graph-private pools.
// Implements qdm/cuda_device.h (for launchers) and qdm/cuda_runtime.h (for the bindings).
//
// Allocator. Requests are rounded to a size class (512 B granularity up to 1 MiB, 2 MiB above)
// and served from a free list of exactly that class, else by cudaMalloc of the rounded size.
// No block splitting: simple, and the class rounding bounds the waste (<= 512 B small, < 2 MiB
// large). All work runs on one stream, so a block freed right after a kernel was enqueued can be
// handed to the next request at once: whatever uses it next is queued behind that kernel.
// On cudaMalloc failure the cache is released and the call retried once; then a typed
// QDM_CUDA_OUT_OF_MEMORY error reports requested, in-use and reserved bytes.
//
// Graphs. While the stream is being captured, every freed block goes to the capturing graph's
// private free list (the graph's kernels may touch it on replay), and blocks allocated during
// the capture are tagged with the graph, so freeing them later also lands in its private list.
// Allocations during a capture try the private list first, then the shared cache, then
// cudaMalloc (allowed in relaxed capture mode). graphDestroy hands the private blocks back.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "qdm/cuda_device.h"
#include "qdm/cuda_runtime.h"
#include "qdm/view.h"

namespace qdm::cuda {
namespace {

[[noreturn]] void fail(const char* code, const std::string& what, cudaError_t err) {
  throw KernelError(code, what + ": " + cudaGetErrorString(err));
}
void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail("QDM_CUDA_ERROR", what, err);
  }
}

constexpr size_t kSmallLimit = size_t(1) << 20;  // up to 1 MiB: 512 B classes
constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t(2) << 20;  // above: 2 MiB classes

size_t roundSize(size_t bytes) {
  if (bytes <= kSmallLimit) return (bytes + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

struct Block {
  size_t size = 0;       // rounded size (what cudaMalloc got)
  size_t requested = 0;  // what the caller asked for
  int64_t graph = 0;     // owning graph (0: none)
};

struct GraphRec {
  cudaGraphExec_t exec = nullptr;
  std::map<size_t, std::vector<void*>> privateFree;  // freed blocks the graph may still touch
  int64_t privateBytes = 0;
};

struct Staging {
  void* host = nullptr;
  cudaEvent_t done = nullptr;
  bool inFlight = false;  // a copy through it may still be running
  bool draining = false;  // copyToHost has not read it back yet: never hand it out
};
constexpr size_t kStagingBytes = size_t(4) << 20;  // one pinned chunk
constexpr size_t kStagingSlots = 4;                // at most 16 MiB pinned

struct Runtime {
  std::mutex mu;
  bool ready = false;
  int device = 0;
  cudaStream_t stream = nullptr;
  std::unordered_map<void*, Block> live;
  std::map<size_t, std::vector<void*>> freeLists;
  AllocatorStats st;
  std::map<int64_t, GraphRec> graphs;
  int64_t nextGraph = 1;
  int64_t capturingGraph = 0;  // graph id being captured (0: none)
  std::vector<Staging> staging;
  size_t nextSlot = 0;
};

Runtime& rt() {
  static Runtime* r = new Runtime();  // never destroyed: no CUDA calls during process teardown
  return *r;
}

// Called with the lock held.
void ensureReady(Runtime& r) {
  if (r.ready) return;
  check(cudaGetDevice(&r.device), "selecting the CUDA device");
  check(cudaSetDevice(r.device), "selecting the CUDA device");
  check(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking), "creating the qdm CUDA stream");
  r.staging.reserve(kStagingSlots);
  r.ready = true;
}

// Releases the shared free lists (never during capture). Lock held.
int64_t releaseCache(Runtime& r) {
  if (r.capturingGraph != 0) return 0;
  int64_t released = 0;
  for (auto& [size, list] : r.freeLists) {
    for (void* p : list) {
      cudaFree(p);  // waits for the device: the block's last users are done
      released += static_cast<int64_t>(size);
    }
    list.clear();
  }
  r.freeLists.clear();
  r.st.reserved -= released;
  r.st.cachedBytes -= released;
  return released;
}

void* popFree(std::map<size_t, std::vector<void*>>& lists, size_t size) {
  auto it = lists.find(size);
  if (it == lists.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

std::string mib(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / 1048576.0);
  return buf;
}

Staging& acquireStaging(Runtime& r) {
  // A free slot (never used, or its last copy finished), else a new one, else wait for the next.
  for (auto& s : r.staging) {
    if (s.draining) continue;
    if (!s.inFlight) return s;
    if (cudaEventQuery(s.done) == cudaSuccess) { s.inFlight = false; return s; }
  }
  cudaGetLastError();  // cudaEventQuery's cudaErrorNotReady is not an error
  if (r.staging.size() < kStagingSlots) {  // capacity reserved: references stay valid
    Staging s;
    check(cudaMallocHost(&s.host, kStagingBytes), "allocating a pinned staging buffer");
    check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "creating a staging event");
    r.staging.push_back(s);
    return r.staging.back();
  }
  // All slots busy: wait for the oldest one that the host is not draining (copyToHost keeps at
  // most 2 of the 4 draining, so one exists).
  for (size_t tries = 0; tries < r.staging.size(); ++tries) {
    Staging& s = r.staging[r.nextSlot];
    r.nextSlot = (r.nextSlot + 1) % r.staging.size();
    if (s.draining) continue;
    check(cudaEventSynchronize(s.done), "waiting for a staging buffer");
    s.inFlight = false;
    return s;
  }
  throw KernelError("QDM_CUDA_ERROR", "no pinned staging buffer is free (internal error)");
}

void refuseDuringCapture(Runtime& r, const char* what) {
  if (r.capturingGraph != 0)
    throw KernelError("QDM_CUDA_CAPTURE", std::string(what) + " is not allowed while a CUDA graph is being captured (a replay could not repeat it)");
}

}  // namespace

// ---- cuda_device.h ------------------------------------------------------------------------

Stream currentStream() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  return r.stream;
}
int currentDevice() { int d = 0; cudaGetDevice(&d); return d; }
int smCount() {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, currentDevice());
  return n;
}
int computeCapability() {
  int major = 0, minor = 0, d = currentDevice();
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d);
  return major * 10 + minor;
}

void* allocDevice(size_t bytes) {
  if (bytes == 0) return nullptr;
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  const size_t size = roundSize(bytes);
  void* p = nullptr;
  int64_t owner = r.capturingGraph;
  if (owner != 0) {
    GraphRec& g = r.graphs[owner];
    p = popFree(g.privateFree, size);
    if (p) g.privateBytes -= static_cast<int64_t>(size);
  }
  if (!p) {
    p = popFree(r.freeLists, size);
    if (p) r.st.cachedBytes -= static_cast<int64_t>(size);
  }
  if (!p) {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      if (releaseCache(r) > 0) err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      if (err == cudaErrorMemoryAllocation)
        throw KernelError("QDM_CUDA_OUT_OF_MEMORY",
                          "CUDA out of memory: requested " + std::to_string(bytes) + " bytes (" + mib(static_cast<int64_t>(bytes)) +
                              "); " + mib(r.st.bytesInUse) + " in use by tensors, " + mib(r.st.reserved) +
                              " reserved by qdm's allocator. Free tensors (dispose/tidy), lower the batch size, or use a smaller dtype.");
      fail("QDM_CUDA_ERROR", "allocating " + std::to_string(bytes) + " bytes on the GPU", err);
    }
    r.st.reserved += static_cast<int64_t>(size);
    r.st.cudaMallocs += 1;
  }
  r.live[p] = Block{size, bytes, owner};
  r.st.bytesInUse += static_cast<int64_t>(size);
  r.st.requestedBytes += static_cast<int64_t>(bytes);
  r.st.allocations += 1;
  if (r.st.bytesInUse > r.st.peak) r.st.peak = r.st.bytesInUse;
  return p;
}

void freeDevice(void* ptr) {
  if (!ptr) return;
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.live.find(ptr);
  if (it == r.live.end()) throw KernelError("QDM_BAD_ARGUMENT", "freeDevice: pointer was not allocated by qdm's CUDA allocator (or was freed twice)");
  Block b = it->second;
  r.live.erase(it);
  r.st.bytesInUse -= static_cast<int64_t>(b.size);
  r.st.requestedBytes -= static_cast<int64_t>(b.requested);
  // During a capture every freed block may be read or written by the graph; after it, blocks
  // that the graph allocated still are. Both stay with the graph.
  int64_t owner = r.capturingGraph != 0 ? r.capturingGraph : b.graph;
  auto g = owner != 0 ? r.graphs.find(owner) : r.graphs.end();
  if (g != r.graphs.end()) {
    g->second.privateFree[b.size].push_back(ptr);
    g->second.privateBytes += static_cast<int64_t>(b.size);
    return;
  }
  r.freeLists[b.size].push_back(ptr);
  r.st.cachedBytes += static_cast<int64_t>(b.size);
}

void checkLaunch(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail("QDM_CUDA_ERROR", what, err);
}

// ---- cuda_runtime.h -----------------------------------------------------------------------

AllocatorStats allocatorStats() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  AllocatorStats s = r.st;
  s.graphPrivateBytes = 0;
  for (auto& [id, g] : r.graphs) s.graphPrivateBytes += g.privateBytes;
  return s;
}

void resetPeak() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  r.st.peak = r.st.bytesInUse;
}

int64_t emptyCache() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.ready) return 0;
  return releaseCache(r);
}

void copyFromHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  refuseDuringCapture(r, "copying host data to the GPU");
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  for (size_t done = 0; done < bytes; done += kStagingBytes) {
    size_t n = bytes - done < kStagingBytes ? bytes - done : kStagingBytes;
    Staging& slot = acquireStaging(r);
    std::memcpy(slot.host, s + done, n);
    check(cudaMemcpyAsync(d + done, slot.host, n, cudaMemcpyHostToDevice, r.stream), "copying host data to the GPU");
    check(cudaEventRecord(slot.done, r.stream), "recording a staging event");
    slot.inFlight = true;
  }
}

void copyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  refuseDuringCapture(r, "copying GPU data to the host");
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  // Two chunks in flight: the device fills one staging buffer while the host drains the other.
  struct Pending { Staging* slot; size_t at; size_t n; };
  std::deque<Pending> pending;
  auto drain = [&] {
    Pending p = pending.front();
    pending.pop_front();
    check(cudaEventSynchronize(p.slot->done), "copying GPU data to the host");
    std::memcpy(d + p.at, p.slot->host, p.n);
    p.slot->inFlight = false;
    p.slot->draining = false;
  };
  try {
  for (size_t done = 0; done < bytes; done += kStagingBytes) {
    size_t n = bytes - done < kStagingBytes ? bytes - done : kStagingBytes;
    if (pending.size() >= 2) drain();
    Staging& slot = acquireStaging(r);
    check(cudaMemcpyAsync(slot.host, s + done, n, cudaMemcpyDeviceToHost, r.stream), "copying GPU data to the host");
    check(cudaEventRecord(slot.done, r.stream), "recording a staging event");
    slot.inFlight = true;
    slot.draining = true;
    pending.push_back({&slot, done, n});
  }
  while (!pending.empty()) drain();
  } catch (...) {
    for (auto& p : pending) p.slot->draining = false;
    throw;
  }
}

void memsetDevice(void* dst, int byteValue, size_t bytes) {
  if (bytes == 0) return;
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  check(cudaMemsetAsync(dst, byteValue, bytes, r.stream), "memset on the GPU");
}

void synchronize() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.ready) return;
  refuseDuringCapture(r, "synchronize()");
  check(cudaStreamSynchronize(r.stream), "synchronizing the qdm CUDA stream");
}

bool capturing() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.capturingGraph != 0;
}

int64_t graphBegin() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ensureReady(r);
  if (r.capturingGraph != 0) throw KernelError("QDM_CUDA_CAPTURE", "graphBegin: a CUDA graph is already being captured (captures do not nest)");
  check(cudaStreamBeginCapture(r.stream, cudaStreamCaptureModeRelaxed), "starting CUDA graph capture");
  int64_t id = r.nextGraph++;
  r.graphs[id] = GraphRec{};
  r.capturingGraph = id;
  return id;
}

namespace {
// Returns a graph's private blocks to the shared cache and untags its live blocks. Lock held.
void disownGraph(Runtime& r, int64_t id) {
  auto it = r.graphs.find(id);
  if (it == r.graphs.end()) return;
  for (auto& [size, list] : it->second.privateFree) {
    auto& shared = r.freeLists[size];
    shared.insert(shared.end(), list.begin(), list.end());
    r.st.cachedBytes += static_cast<int64_t>(size * list.size());
  }
  for (auto& [p, b] : r.live) if (b.graph == id) b.graph = 0;
  if (it->second.exec) cudaGraphExecDestroy(it->second.exec);
  r.graphs.erase(it);
}
}  // namespace

int64_t graphEnd() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  int64_t id = r.capturingGraph;
  if (id == 0) throw KernelError("QDM_CUDA_CAPTURE", "graphEnd: no CUDA graph capture is in progress");
  r.capturingGraph = 0;
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamEndCapture(r.stream, &graph);
  if (err != cudaSuccess || graph == nullptr) {
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    disownGraph(r, id);  // the graph never runs: its blocks are free for everyone
    fail("QDM_CUDA_CAPTURE", "graphEnd: the capture was invalidated (an operation in it cannot be captured)", err == cudaSuccess ? cudaErrorStreamCaptureInvalidated : err);
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    cudaGetLastError();
    disownGraph(r, id);
    fail("QDM_CUDA_CAPTURE", "graphEnd: instantiating the captured graph failed", err);
  }
  r.graphs[id].exec = exec;
  return id;
}

void graphAbort() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  int64_t id = r.capturingGraph;
  if (id == 0) return;
  r.capturingGraph = 0;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(r.stream, &graph);
  cudaGetLastError();
  if (graph) cudaGraphDestroy(graph);
  disownGraph(r, id);
}

void graphReplay(int64_t handle) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.graphs.find(handle);
  if (it == r.graphs.end() || !it->second.exec) throw KernelError("QDM_BAD_ARGUMENT", "graphReplay: unknown or destroyed graph handle " + std::to_string(handle));
  refuseDuringCapture(r, "replaying a CUDA graph");
  check(cudaGraphLaunch(it->second.exec, r.stream), "replaying a CUDA graph");
}

void graphDestroy(int64_t handle) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  if (handle == r.capturingGraph) throw KernelError("QDM_CUDA_CAPTURE", "graphDestroy: the graph is still being captured");
  // Blocks go back to the shared cache: later users are queued behind the last replay.
  disownGraph(r, handle);
}

DeviceFacts deviceFacts() {
  Runtime& r = rt();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    ensureReady(r);
  }
  DeviceFacts f;
  f.device = r.device;
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, r.device), "reading device properties");
  f.name = p.name;
  f.major = p.major;
  f.minor = p.minor;
  f.smCount = p.multiProcessorCount;
  size_t freeB = 0, totalB = 0;
  check(cudaMemGetInfo(&freeB, &totalB), "reading device memory");
  f.totalMemory = static_cast<int64_t>(totalB);
  f.freeMemory = static_cast<int64_t>(freeB);
  return f;
}

}  // namespace qdm::cuda
