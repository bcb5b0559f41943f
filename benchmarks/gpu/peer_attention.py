"""PyTorch peer for benchmarks/gpu-attention.mjs: torch.nn.functional.scaled_dot_product_attention
(its fused flash / memory-efficient / cuDNN backends, whichever PyTorch picks) at the same
shapes, timed with CUDA events (median of trials, each trial `reps` back-to-back calls).

  python3 benchmarks/gpu/peer_attention.py '<json: {"shapes": [[B, H, Lq, Lk, D], ...], "reps": R, "trials": T}>'

q [B, H, Lq, D], k/v [B, H, Lk, D], contiguous, fp16 and bf16, no mask, default scale.
Prints one JSON object: {"torch", "device", "capability",
"attention": [{"B", "H", "Lq", "Lk", "D", "fp16_ms", "bf16_ms", "fp16_tflops", "bf16_tflops"}]}
with 4 B H Lq Lk D flop per call (the two products).
"""
import json
import sys

import torch
import torch.nn.functional as F

from peer_timing import time_ms


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    reps, trials = int(cfg.get("reps", 20)), int(cfg.get("trials", 7))
    dev = torch.device("cuda")
    cap = torch.cuda.get_device_capability()
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    rows = []
    for B, H, Lq, Lk, D in cfg.get("shapes", [[2, 8, 4096, 4096, 40]]):
        torch.manual_seed(0)
        r = {"B": B, "H": H, "Lq": Lq, "Lk": Lk, "D": D}
        for key, dt in dtypes.items():
            q = torch.randn(B, H, Lq, D, dtype=dt, device=dev)
            k = torch.randn(B, H, Lk, D, dtype=dt, device=dev)
            v = torch.randn(B, H, Lk, D, dtype=dt, device=dev)
            r[key + "_ms"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), reps, trials)
            r[key + "_tflops"] = 4.0 * B * H * Lq * Lk * D / (r[key + "_ms"] * 1e-3) / 1e12
            del q, k, v
        rows.append(r)
        torch.cuda.empty_cache()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "capability": list(cap), "attention": rows}))


if __name__ == "__main__":
    main()
