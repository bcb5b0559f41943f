"""Timing shared by the PyTorch peer scripts: CUDA events around `reps` back-to-back calls,
the median over `trials`, in milliseconds per call (one warm-up call first)."""
import torch


def time_ms(fn, reps, trials):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps)
    times.sort()
    return times[len(times) // 2]
