"""PyTorch peer for benchmarks/gpu-gemm.mjs: cuBLAS matmuls and cuDNN 3x3 convolutions at the
same shapes, timed with CUDA events (median of trials, each trial `reps` back-to-back calls).

  python3 benchmarks/gpu/peer_gemm.py '<json: {"matmul": [[M, N, K], ...], "conv": [[N, C, H, W, O, k], ...], "reps": R, "trials": T}>'

matmul: A [M, K] @ W^T with W [N, K] (the layout of a linear layer), in fp16, bf16 and f32 with
TF32 allowed (torch.backends.cuda.matmul.allow_tf32 = True). conv: NCHW, k x k, padding k // 2,
stride 1, with bias, fp16 and bf16, cudnn.benchmark on (the best cuDNN algorithm, as a tuned
deployment would use). Prints one JSON object: {"torch", "device", "capability",
"matmul": [{"M", "N", "K", "fp16_ms", "bf16_ms", "tf32_ms", "*_tflops"}],
"conv": [{"N", "C", "H", "W", "O", "k", "fp16_ms", "bf16_ms", "*_tflops"}]}.
"""
import json
import sys

import torch
import torch.nn.functional as F

from peer_timing import time_ms


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    reps, trials = int(cfg.get("reps", 20)), int(cfg.get("trials", 7))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    cap = torch.cuda.get_device_capability()
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}
    mm = []
    for M, N, K in cfg.get("matmul", [[8192, 8192, 8192]]):
        torch.manual_seed(0)
        r = {"M": M, "N": N, "K": K}
        for key, dt in dtypes.items():
            a = torch.randn(M, K, dtype=dt, device=dev)
            w = torch.randn(N, K, dtype=dt, device=dev)
            r[key + "_ms"] = time_ms(lambda: torch.matmul(a, w.t()), reps, trials)
            r[key + "_tflops"] = 2.0 * M * N * K / (r[key + "_ms"] * 1e-3) / 1e12
            del a, w
        mm.append(r)
        torch.cuda.empty_cache()
    conv = []
    for N, C, H, W, O, k in cfg.get("conv", []):
        torch.manual_seed(0)
        r = {"N": N, "C": C, "H": H, "W": W, "O": O, "k": k}
        for key in ("fp16", "bf16"):
            dt = dtypes[key]
            x = torch.randn(N, C, H, W, dtype=dt, device=dev)
            w = torch.randn(O, C, k, k, dtype=dt, device=dev) * 0.05
            b = torch.randn(O, dtype=dt, device=dev)
            r[key + "_ms"] = time_ms(lambda: F.conv2d(x, w, b, padding=k // 2), reps, trials)
            r[key + "_tflops"] = 2.0 * N * O * H * W * C * k * k / (r[key + "_ms"] * 1e-3) / 1e12
            del x, w, b
        conv.append(r)
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "capability": cap[0] * 10 + cap[1], "matmul": mm, "conv": conv}))


if __name__ == "__main__":
    main()
