"""PyTorch peer for benchmarks/gpu-qgemm.mjs: cuBLAS/cuBLASLt 8-bit and fp16 GEMMs at the same
shapes, timed with CUDA events (median of trials, each trial `reps` back-to-back calls).

  python3 benchmarks/gpu/peer_qgemm.py '<json: {"shapes": [[M, N, K], ...], "reps": N, "trials": T}>'

Per shape: torch._int_mm (int8 x int8 -> int32 output: the raw integer GEMM, no epilogue),
torch._scaled_mm with fp8 e4m3 operands (per-tensor scales, fp16 output; and row-wise scales
with bf16 output where this PyTorch supports it) and an fp16 matmul. Prints one JSON object:
{"torch", "device", "capability", "results": [{"M", "N", "K", "int_mm_ms", "scaled_mm_ms",
"scaled_mm_rowwise_ms", "fp16_ms", ... "*_tops"}]}; a path this GPU or PyTorch lacks is null.
"""
import json
import sys

import torch

from peer_timing import time_ms


def try_time(fn, reps, trials):
    try:
        return time_ms(fn, reps, trials)
    except Exception as e:  # a path this GPU / PyTorch version does not have
        print(f"peer_qgemm: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    shapes = cfg.get("shapes", [[8192, 8192, 8192]])
    reps, trials = int(cfg.get("reps", 20)), int(cfg.get("trials", 7))
    dev = torch.device("cuda")
    cap = torch.cuda.get_device_capability()
    results = []
    for M, N, K in shapes:
        torch.manual_seed(0)
        a8 = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=dev)
        b8 = torch.randint(-127, 128, (N, K), dtype=torch.int8, device=dev).t()  # [K, N], column-major
        a16 = torch.randn(M, K, dtype=torch.float16, device=dev)
        b16 = torch.randn(N, K, dtype=torch.float16, device=dev).t()
        r = {"M": M, "N": N, "K": K}
        r["int_mm_ms"] = try_time(lambda: torch._int_mm(a8, b8), reps, trials)
        r["fp16_ms"] = try_time(lambda: torch.matmul(a16, b16), reps, trials)
        r["scaled_mm_ms"] = r["scaled_mm_rowwise_ms"] = None
        if cap >= (8, 9) and hasattr(torch, "float8_e4m3fn"):
            af = a16.to(torch.float8_e4m3fn)
            bf = torch.randn(N, K, dtype=torch.float16, device=dev).to(torch.float8_e4m3fn).t()
            one = torch.tensor(1.0, device=dev)
            r["scaled_mm_ms"] = try_time(lambda: torch._scaled_mm(af, bf, scale_a=one, scale_b=one, out_dtype=torch.float16), reps, trials)
            sa = torch.rand(M, 1, device=dev, dtype=torch.float32) + 0.5
            sb = torch.rand(1, N, device=dev, dtype=torch.float32) + 0.5
            r["scaled_mm_rowwise_ms"] = try_time(lambda: torch._scaled_mm(af, bf, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16), reps, trials)
        ops = 2.0 * M * N * K
        for key in ("int_mm", "fp16", "scaled_mm", "scaled_mm_rowwise"):
            ms = r[key + "_ms"]
            r[key + "_tops"] = ops / (ms * 1e-3) / 1e12 if ms else None
        results.append(r)
        del a8, b8, a16, b16
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "capability": cap[0] * 10 + cap[1], "results": results}))


if __name__ == "__main__":
    main()
