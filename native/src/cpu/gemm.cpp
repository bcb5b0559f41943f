// Blocked, packed, ISA-dispatched single-precision GEMM (the BLIS loop structure):
//   jc over N in NC columns -> pc over K in KC rows (pack B kc x nc into NR-wide micro-panels)
//   -> ic over M in MC rows (pack A mc x kc into MR-tall micro-panels, alpha applied)
//   -> jr, ir: one micro-kernel call per MR x NR tile of C.
// Packing hides the operand layout, so any strides (transposed, broadcast, sliced) run the same
// fast path. beta is applied by the first kc block only; later blocks accumulate (beta = 1).
// Threads split the (ic, jr-range) tiles of one packed B panel; K is never split, so every C
// element is computed by one thread with a fixed k order: results do not depend on the thread
// count, and sgemmSerial (for callers already inside the pool) gives the same bits as sgemm.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/gemm_internal.h"
#include "qdm/cpu.h"
#include "qdm/gemm.h"
#include "qdm/parallel.h"

namespace qdm::cpu::gemm {
namespace {

// ---- scalar fallback micro-kernel: 4 x 8 tile, plain loops (the compiler vectorizes with SSE) ----
constexpr int SMR = 4, SNR = 8;

void scalarUkernel(int64_t kc, const float* a, const float* b, float* c, int64_t rsc, int64_t csc, float beta,
                   int m, int n) {
  float acc[SMR][SNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < SMR; ++i)
      for (int j = 0; j < SNR; ++j) acc[i][j] += a[i] * b[j];
    a += SMR;
    b += SNR;
  }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float& cij = c[i * rsc + j * csc];
      cij = beta == 0.0f ? acc[i][j] : beta * cij + acc[i][j];
    }
}

KernelDesc scalarKernel() { return {"scalar", SMR, SNR, 128, 256, 2048, scalarUkernel}; }

const KernelDesc* bestKernel() {
  static const KernelDesc avx512 = avx512Kernel(), avx2 = avx2Kernel(), scalar = scalarKernel();
  if (hasAvx512()) return &avx512;
  if (hasAvx2()) return &avx2;
  return &scalar;
}

std::atomic<const KernelDesc*> forced{nullptr};

// 64-byte aligned scratch that grows on demand and is reused by its thread.
struct AlignedBuffer {
  float* p = nullptr;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) { cap = 0; throw std::bad_alloc(); }
      cap = n;
    }
    return p;
  }
  ~AlignedBuffer() { std::free(p); }
};

thread_local AlignedBuffer tlsA, tlsB;
// Which A block tlsA holds, so a thread that gets several jr-ranges of one ic block packs once.
struct PackedAKey { uint64_t call = 0; int64_t pc = -1, ic = -1; };
thread_local PackedAKey tlsAKey;
std::atomic<uint64_t> callCounter{1};

// B (kc x nc at B, strides rsb/csb) -> ceil(nc/nr) micro-panels of kc x nr, k-major, zero-padded.
void packPanelB(int64_t kc, int64_t nc, const float* B, int64_t rsb, int64_t csb, int nr, float* dst, int64_t p0,
                int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t j0 = p * nr, nb = std::min<int64_t>(nr, nc - j0);
    float* d = dst + p * kc * nr;
    const float* s = B + j0 * csb;
    if (csb == 1 && nb == nr && (nr == 16 || nr == 32 || nr == 8)) {
      // Full panel: fixed-size copies the compiler turns into vector moves.
      if (nr == 16) for (int64_t k = 0; k < kc; ++k, d += 16, s += rsb) std::memcpy(d, s, 16 * sizeof(float));
      else if (nr == 32) for (int64_t k = 0; k < kc; ++k, d += 32, s += rsb) std::memcpy(d, s, 32 * sizeof(float));
      else for (int64_t k = 0; k < kc; ++k, d += 8, s += rsb) std::memcpy(d, s, 8 * sizeof(float));
    } else if (csb == 1) {
      for (int64_t k = 0; k < kc; ++k, d += nr, s += rsb) {
        std::memcpy(d, s, nb * sizeof(float));
        for (int64_t j = nb; j < nr; ++j) d[j] = 0.0f;
      }
    } else {
      for (int64_t k = 0; k < kc; ++k, d += nr) {
        for (int64_t j = 0; j < nb; ++j) d[j] = s[k * rsb + j * csb];
        for (int64_t j = nb; j < nr; ++j) d[j] = 0.0f;
      }
    }
  }
}

// A full MR-row panel, hoisted row pointers: the compiler unrolls the fixed-size inner loop.
template <int MR>
void packFullA(int64_t kc, float alpha, const float* s, int64_t rsa, int64_t csa, float* d) {
  const float* r[MR];
  for (int i = 0; i < MR; ++i) r[i] = s + i * rsa;
  if (csa == 1) {
    for (int64_t k = 0; k < kc; ++k, d += MR)
      for (int i = 0; i < MR; ++i) d[i] = alpha * r[i][k];
  } else {
    for (int64_t k = 0; k < kc; ++k, d += MR)
      for (int i = 0; i < MR; ++i) d[i] = alpha * r[i][k * csa];
  }
}

// A (mc x kc at A) -> ceil(mc/mr) micro-panels of mr x kc, k-major, alpha applied, zero-padded.
void packBlockA(int64_t mc, int64_t kc, float alpha, const float* A, int64_t rsa, int64_t csa, int mr, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t mb = std::min<int64_t>(mr, mc - i0);
    float* d = dst + i0 * kc;
    const float* s = A + i0 * rsa;
    if (mb == mr && rsa != 1) {
      if (mr == 6) { packFullA<6>(kc, alpha, s, rsa, csa, d); continue; }
      if (mr == 12) { packFullA<12>(kc, alpha, s, rsa, csa, d); continue; }
      if (mr == 4) { packFullA<4>(kc, alpha, s, rsa, csa, d); continue; }
    }
    if (rsa == 1) {
      for (int64_t k = 0; k < kc; ++k, d += mr) {
        const float* sk = s + k * csa;
        for (int64_t i = 0; i < mb; ++i) d[i] = alpha * sk[i];
        for (int64_t i = mb; i < mr; ++i) d[i] = 0.0f;
      }
    } else {
      for (int64_t k = 0; k < kc; ++k, d += mr) {
        for (int64_t i = 0; i < mb; ++i) d[i] = alpha * s[i * rsa + k * csa];
        for (int64_t i = mb; i < mr; ++i) d[i] = 0.0f;
      }
    }
  }
}

// C = beta * C when there is nothing to accumulate (K == 0 or alpha == 0).
void scaleC(int64_t M, int64_t N, float beta, float* C, int64_t rsc, int64_t csc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float& c = C[m * rsc + n * csc];
      c = beta == 0.0f ? 0.0f : beta * c;
    }
}

// Small problems: packing costs more than it saves. Row accumulator, fixed k order.
void directSmall(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                 const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  thread_local std::vector<float> row;
  row.assign(N, 0.0f);
  for (int64_t m = 0; m < M; ++m) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[m * rsa + k * csa];
      const float* b = B + k * rsb;
      if (csb == 1)
        for (int64_t n = 0; n < N; ++n) row[n] += a * b[n];
      else
        for (int64_t n = 0; n < N; ++n) row[n] += a * b[n * csb];
    }
    for (int64_t n = 0; n < N; ++n) {
      float& c = C[m * rsc + n * csc];
      c = beta == 0.0f ? alpha * row[n] : alpha * row[n] + beta * c;
    }
  }
}

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

constexpr int64_t kSmallFlops = 32 * 32 * 32;   // M*N*K below this: direct loop
constexpr int64_t kThreadFlops = 64 * 64 * 64;  // M*N*K below this: one thread

void blocked(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa, const float* B,
             int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc, bool threaded) {
  const KernelDesc& kd = activeKernel();
  const int mr = kd.mr, nr = kd.nr;
  const int64_t MC = std::max<int64_t>(mr, kd.mc / mr * mr), KC = kd.kc, NC = std::max<int64_t>(nr, kd.nc / nr * nr);
  const int threads = threaded ? numThreads() : 1;
  const uint64_t call = callCounter.fetch_add(1);

  // Balanced blocks: N = 4096 with NC = 4080 runs as 2 x 2048, not 4080 + 16 (same for K).
  const int64_t ncBlock = roundUp((N + (N + NC - 1) / NC - 1) / ((N + NC - 1) / NC), nr);
  const int64_t kcBlock = (K + (K + KC - 1) / KC - 1) / ((K + KC - 1) / KC);
  for (int64_t jc = 0; jc < N; jc += ncBlock) {
    const int64_t nc = std::min(ncBlock, N - jc), panels = (nc + nr - 1) / nr;
    for (int64_t pc = 0; pc < K; pc += kcBlock) {
      const int64_t kc = std::min(kcBlock, K - pc);
      const float betaK = pc == 0 ? beta : 1.0f;
      float* bp = tlsB.get(static_cast<size_t>(panels * kc * nr));
      const float* bsrc = B + pc * rsb + jc * csb;
      // Row blocks of whole mr-panels, sizes differing by at most one panel; with threads, a
      // multiple of the thread count so the tiles spread evenly. Row blocking never changes
      // the arithmetic of a C element, so this does not make results thread-dependent.
      const int64_t rowPanels = (M + mr - 1) / mr;
      const int64_t icBlocks = std::min(rowPanels, roundUp((M + MC - 1) / MC, threads));
      auto runTile = [&](int64_t ib, int64_t p0, int64_t p1) {
        const int64_t ic = ib * rowPanels / icBlocks * mr;
        const int64_t mc = std::min(M, (ib + 1) * rowPanels / icBlocks * mr) - ic;
        const size_t capBefore = tlsA.cap;
        float* ap = tlsA.get(static_cast<size_t>((mc + mr - 1) / mr * mr * kc));
        if (tlsA.cap != capBefore) tlsAKey = {};  // reallocated: nothing cached any more
        if (!(tlsAKey.call == call && tlsAKey.pc == pc && tlsAKey.ic == ic)) {
          packBlockA(mc, kc, alpha, A + ic * rsa + pc * csa, rsa, csa, mr, ap);
          tlsAKey = {call, pc, ic};
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t j0 = p * nr;
          const int n = static_cast<int>(std::min<int64_t>(nr, nc - j0));
          const float* bpp = bp + p * kc * nr;
          float* cj = C + ic * rsc + (jc + j0) * csc;
          for (int64_t i0 = 0; i0 < mc; i0 += mr)
            kd.ukernel(kc, ap + i0 * kc, bpp, cj + i0 * rsc, rsc, csc, betaK,
                       static_cast<int>(std::min<int64_t>(mr, mc - i0)), n);
        }
      };

      if (threads <= 1) {
        packPanelB(kc, nc, bsrc, rsb, csb, nr, bp, 0, panels);
        for (int64_t ib = 0; ib < icBlocks; ++ib) runTile(ib, 0, panels);
        continue;
      }
      // Pack B cooperatively (a copy: order does not matter), then split tiles: enough tasks
      // for dynamic balance (~4 per thread) but jr-ranges of at least 8 micro-panels so the
      // A block packed by a thread is reused over a meaningful width.
      const int64_t groupsB = std::min<int64_t>(panels, 4 * threads);
      parallelTasks(groupsB, [&](int64_t g) {
        packPanelB(kc, nc, bsrc, rsb, csb, nr, bp, g * panels / groupsB, (g + 1) * panels / groupsB);
      });
      // Few row blocks (small M): split the columns too, for about 4 tasks per thread (dynamic
      // balance against uneven blocks and other load) while a column range keeps >= 8 panels
      // to reuse its packed A block over; at least enough for every thread to get work.
      int64_t jsplit = 1;
      if (icBlocks < 4 * threads) jsplit = std::min<int64_t>((4 * threads + icBlocks - 1) / icBlocks, panels / 8);
      if (icBlocks % threads != 0)
        jsplit = std::max<int64_t>(jsplit, std::min<int64_t>(panels, threads / std::gcd<int64_t>(icBlocks, threads)));
      jsplit = std::max<int64_t>(1, jsplit);
      parallelTasks(icBlocks * jsplit, [&](int64_t t) {
        const int64_t ib = t / jsplit, js = t % jsplit;
        runTile(ib, js * panels / jsplit, (js + 1) * panels / jsplit);
      });
    }
  }
}

void dispatch(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa, const float* B,
              int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc, bool threaded) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) { scaleC(M, N, beta, C, rsc, csc); return; }
  const int64_t work = M * N * K;
  if (work < kSmallFlops) { directSmall(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc); return; }
  blocked(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc, threaded && work >= kThreadFlops);
}

// Portable peak estimate: 8 independent 4-lane multiply-add chains (SSE under x86-64-v2).
double peakScalar(double seconds) {
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = static_cast<float>(i);
  auto t0 = std::chrono::steady_clock::now();
  int64_t iters = 0;
  double el = 0;
  do {
    for (int r = 0; r < (1 << 16); ++r)
      for (int i = 0; i < 32; ++i) acc[i] = acc[i] * 0.999999f + 1e-6f;
    iters += 1 << 16;
    el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (el < seconds);
  volatile float sink = acc[0] + acc[31];
  (void)sink;
  return static_cast<double>(iters) * 64.0 / el * 1e-9;
}

}  // namespace

const KernelDesc& activeKernel() {
  const KernelDesc* f = forced.load();
  return f ? *f : *bestKernel();
}

bool forceKernel(const char* name) {
  static const KernelDesc avx512 = avx512Kernel(), avx2 = avx2Kernel(), scalar = scalarKernel();
  const std::string n = name ? name : "";
  if (n == "auto" || n.empty()) { forced.store(nullptr); return true; }
  if (n == "avx512" && hasAvx512()) { forced.store(&avx512); return true; }
  if (n == "avx2" && hasAvx2()) { forced.store(&avx2); return true; }
  if (n == "scalar") { forced.store(&scalar); return true; }
  return false;
}

void sgemmSerial(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa,
                 const float* B, int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  dispatch(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc, false);
}

}  // namespace qdm::cpu::gemm

namespace qdm::cpu {

void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rsa, int64_t csa, const float* B,
           int64_t rsb, int64_t csb, float beta, float* C, int64_t rsc, int64_t csc) {
  gemm::dispatch(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, rsc, csc, true);
}

void sgemmBatched(int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t bsa,
                  int64_t rsa, int64_t csa, const float* B, int64_t bsb, int64_t rsb, int64_t csb, float beta,
                  float* C, int64_t bsc, int64_t rsc, int64_t csc) {
  if (batch <= 0) return;
  // Many small items: one item per task (each item's bits equal the threaded sgemm's).
  if (batch > 1 && batch >= numThreads() && M * N * K <= 128 * 128 * 128) {
    parallelTasks(batch, [&](int64_t b) {
      gemm::sgemmSerial(M, N, K, alpha, A + b * bsa, rsa, csa, B + b * bsb, rsb, csb, beta, C + b * bsc, rsc, csc);
    });
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    sgemm(M, N, K, alpha, A + b * bsa, rsa, csa, B + b * bsb, rsb, csb, beta, C + b * bsc, rsc, csc);
}

double measurePeakGflops(int threads, double seconds) {
  threads = std::max(1, threads);
  seconds = std::max(0.01, seconds);
  if (hasAvx512()) return gemm::peakAvx512(threads, seconds);
  if (hasAvx2()) return gemm::peakAvx2(threads, seconds);
  return gemm::peakScalar(seconds) * threads;  // estimate: per-core rate times cores
}

}  // namespace qdm::cpu
