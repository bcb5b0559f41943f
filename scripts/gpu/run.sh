#!/usr/bin/env bash
# Runs on the GPU machine (no Node.js, no network): unpacks the bundle that scripts/gpu/pack.sh
# made next to this script, then runs the CUDA tests and the GPU benchmarks (benchmarks/gpu-*.mjs,
# which run their PyTorch peers themselves), writing logs and JSON to $OUT (default ./gpu-out).
#
# Usage: bash run.sh [tests|bench|cpu|all]    (default all; each stage fits one 10-minute device call)
#   cpu: the CPU kernel tests and quick CPU benchmarks on this machine's host CPU (AVX-512 / VNNI
#        kernels, which the AVX2-only development machines cannot run)
#   QDM_GPU_TESTS   test paths for vitest (default: every CUDA test file)
#   QDM_BENCH_ARGS  extra arguments for each benchmark (e.g. --quick)
#   QDM_BENCH       which benchmarks (default: benchmarks/gpu-*.mjs)
# Exit status: that of the test runs (benchmarks only log their failures). The quant GEMM tests
# run twice: as configured, then with QDM_QGEMM_WGMMA=1 (the opt-in Hopper wgmma kernel).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WHAT=${1:-all}
OUT=${OUT:-$HERE/gpu-out}
mkdir -p "$OUT"
WORK=${QDM_GPU_WORK:-$(mktemp -d /tmp/qdm-gpu.XXXXXX)}
mkdir -p "$WORK"
t0=$(date +%s)

xz -dc "$HERE/node.xz" > "$WORK/node" && chmod +x "$WORK/node" || { echo "run.sh: cannot unpack node.xz" | tee "$OUT/run.log"; exit 1; }
mkdir -p "$WORK/repo"
tar -xJf "$HERE/repo.tar.xz" -C "$WORK/repo" || { echo "run.sh: cannot unpack repo.tar.xz" | tee "$OUT/run.log"; exit 1; }
if [ -f "$HERE/fixtures.tar.xz" ]; then
  mkdir -p "$WORK/fixtures" && tar -xJf "$HERE/fixtures.tar.xz" -C "$WORK/fixtures" && export QDM_FIXTURES="$WORK/fixtures"
fi
export PATH="$WORK:$PATH"
cd "$WORK/repo"

{
  echo "commit: $(cat "$HERE/COMMIT" 2>/dev/null)"
  echo "node: $(node -v)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  node -e "const a=require('./native/index.cjs'); console.log(JSON.stringify(a.cudaInfo())); if (a.cuda && a.cudaInfo().deviceCount > 0) console.log(JSON.stringify(a.cuda.deviceInfo()))" 2>&1
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} > "$OUT/env.log"
cat "$OUT/env.log"

rc=0
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
  # shellcheck disable=SC2206
  tests=(${QDM_GPU_TESTS:-packages/core/test/cuda $(ls packages/*/test/cuda-*.test.ts 2>/dev/null)})
  echo "== tests: ${tests[*]}"
  node node_modules/vitest/vitest.mjs run "${tests[@]}" --reporter=default --reporter=json --outputFile.json="$OUT/tests.json" > "$OUT/tests.log" 2>&1
  rc=$?
  tail -40 "$OUT/tests.log"
  echo "tests exit status $rc"
  # The opt-in Hopper wgmma kernel (W8 GEMMs; a no-op below sm_90): the quant GEMM tests again on it.
  if [ -f packages/quant/test/cuda-quant.test.ts ]; then
    echo "== tests with QDM_QGEMM_WGMMA=1: packages/quant/test/cuda-quant.test.ts"
    QDM_QGEMM_WGMMA=1 node node_modules/vitest/vitest.mjs run packages/quant/test/cuda-quant.test.ts --reporter=default --reporter=json --outputFile.json="$OUT/tests-wgmma.json" > "$OUT/tests-wgmma.log" 2>&1
    rc2=$?
    tail -40 "$OUT/tests-wgmma.log"
    echo "wgmma tests exit status $rc2"
    [ "$rc" -eq 0 ] && rc=$rc2
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  for b in ${QDM_BENCH:-benchmarks/gpu-*.mjs}; do
    [ -f "$b" ] || continue
    name=$(basename "$b" .mjs)
    echo "== $name"
    # shellcheck disable=SC2086
    node "$b" --json "$OUT/$name.json" ${QDM_BENCH_ARGS:-} > "$OUT/$name.log" 2>&1
    echo "$name exit status $?" | tee -a "$OUT/$name.log"
    tail -25 "$OUT/$name.log"
  done
  # The opt-in wgmma columns last, in their own process (the kernel has never run; see gpu-qgemm.mjs).
  if [ -f benchmarks/gpu-qgemm.mjs ] && [ -z "${QDM_BENCH:-}" ]; then
    echo "== gpu-qgemm --wgmma"
    # shellcheck disable=SC2086
    node benchmarks/gpu-qgemm.mjs --wgmma --no-peer --json "$OUT/gpu-qgemm-wgmma.json" ${QDM_BENCH_ARGS:-} > "$OUT/gpu-qgemm-wgmma.log" 2>&1
    echo "gpu-qgemm --wgmma exit status $?" | tee -a "$OUT/gpu-qgemm-wgmma.log"
    tail -25 "$OUT/gpu-qgemm-wgmma.log"
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = cpu ]; then
  echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2); flags: $(grep -m1 -o -w -E 'avx512f|avx512_vnni|avx512vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  node node_modules/vitest/vitest.mjs run packages/core/test/gemm.test.ts packages/core/test/attention-fused.test.ts packages/quant/test/qgemm.test.ts packages/quant/test/kernels.test.ts \
    --reporter=default --reporter=json --outputFile.json="$OUT/cpu-tests.json" > "$OUT/cpu-tests.log" 2>&1
  rc3=$?
  tail -15 "$OUT/cpu-tests.log"
  echo "cpu tests exit status $rc3"
  [ "$rc" -eq 0 ] && rc=$rc3
  for b in quant-gemm cpu-kernels; do
    [ -f "benchmarks/$b.mjs" ] || continue
    node "benchmarks/$b.mjs" --quick --json "$OUT/$b.json" > "$OUT/$b.log" 2>&1
    echo "$b exit status $?" | tee -a "$OUT/$b.log"
    tail -25 "$OUT/$b.log"
  done
fi
echo "run.sh: done in $(( $(date +%s) - t0 )) s; results in $OUT"
exit $rc
