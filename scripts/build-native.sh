#!/usr/bin/env bash
# Builds native/build/Release/qdm.node with cmake-js. Serialised by a lock so that parallel
# builds (turbo, several shells) never share a half-written build folder.
# QDM_CUDA=auto|on|off (default auto): compile the CUDA sources when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/../native"
mkdir -p build
exec 9>build/.lock
flock 9
cuda="${QDM_CUDA:-auto}"
jobs="${QDM_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
stamp="build/.configured-$cuda"
if [ ! -f "$stamp" ] || [ CMakeLists.txt -nt "$stamp" ]; then
  rm -f build/.configured-*
  npx cmake-js configure --CDQDM_CUDA="$cuda" --CDCMAKE_BUILD_TYPE=Release >build/configure.log 2>&1 || { cat build/configure.log; exit 1; }
  touch "$stamp"
fi
# The build's own exit status decides (a failed incremental build must not leave the old qdm.node passing).
set +e
npx cmake-js build --parallel "$jobs" >build/build.log 2>&1
rc=$?
set -e
grep -vE '^\[|^info|Building|Consolidate' build/build.log || true
if [ "$rc" -ne 0 ]; then echo "native build failed (exit $rc): see native/build/build.log" >&2; exit "$rc"; fi
test -f build/Release/qdm.node || { echo "native build failed: build/Release/qdm.node missing" >&2; exit 1; }
