"""PyTorch peer for benchmarks/gpu-unet.mjs: the same U-Nets, built in plain PyTorch from the
diffusers configs (diffusers itself is not installed on the GPU machine and cannot be fetched
there), timed the same way: one forward, eager and replayed as a CUDA graph.

  python3 benchmarks/gpu/peer_unet.py '<json: {"cases": [...], "reps": N}>'

Each case: {"name", "config" (diffusers config), "batch", "dtype": "float16", "compile": bool}.
Prints one JSON object: {"torch": version, "device": name, "results": [{name, params,
eager_ms, graph_ms, compile_ms?}]}. The parameter count is printed so that it can be checked
against the real model's (SD 1.5 859,520,964; DDPM CIFAR-10 35,746,307): equal counts mean the
same layers, hence the same work, as diffusers' own classes.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, flip_sin_to_cos, shift):
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class Resnet(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    def __init__(self, dim, heads, head_dim, cross_dim=None, bias=False, out_bias=True):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(cross_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(cross_dim or dim, inner, bias=bias)
        self.to_out = nn.Linear(inner, dim, bias=out_bias)

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, lq, _ = x.shape
        q = self.to_q(x).view(b, lq, self.heads, -1).transpose(1, 2)
        k = self.to_k(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(o.transpose(1, 2).reshape(b, lq, -1))


class Transformer2D(nn.Module):
    """diffusers Transformer2DModel with one BasicTransformerBlock (SD 1.5: conv projections)."""

    def __init__(self, dim, heads, cross_dim, groups, linear_proj):
        super().__init__()
        hd = dim // heads
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.linear_proj = linear_proj
        self.proj_in = nn.Linear(dim, dim) if linear_proj else nn.Conv2d(dim, dim, 1)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, hd)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, hd, cross_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff_proj = nn.Linear(dim, dim * 8)  # GEGLU
        self.ff_out = nn.Linear(dim * 4, dim)
        self.proj_out = nn.Linear(dim, dim) if linear_proj else nn.Conv2d(dim, dim, 1)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        res = x
        x = self.norm(x)
        if self.linear_proj:
            x = self.proj_in(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            x = self.proj_in(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        a, g = self.ff_proj(self.norm3(x)).chunk(2, dim=-1)
        x = self.ff_out(a * F.gelu(g)) + x
        if self.linear_proj:
            x = self.proj_out(x).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            x = self.proj_out(x.reshape(b, h, w, c).permute(0, 3, 1, 2))
        return x + res


class SpatialAttention(nn.Module):
    """UNet2DModel's attention block (AttnDownBlock2D / AttnUpBlock2D / mid): group norm, one head per head_dim."""

    def __init__(self, dim, head_dim, groups, eps):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, dim, eps=eps)
        heads = dim // head_dim if head_dim else 1
        self.attn = Attention(dim, heads, dim // heads, bias=True)

    def forward(self, x, _ctx=None):
        b, c, h, w = x.shape
        y = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        y = self.attn(y).transpose(1, 2).reshape(b, c, h, w)
        return x + y


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg["block_out_channels"]
        self.cond = cfg.get("cross_attention_dim") is not None
        temb = ch[0] * 4
        g, eps = cfg.get("norm_num_groups", 32), cfg.get("norm_eps", 1e-5)
        self.flip, self.shift = cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0)
        self.ch0 = ch[0]
        self.time1, self.time2 = nn.Linear(ch[0], temb), nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        lpb = cfg["layers_per_block"]
        hd = cfg.get("attention_head_dim")

        def attn(c):
            if self.cond:
                heads = hd if isinstance(hd, int) else 8  # SD 1.5: attention_head_dim (8) is the head COUNT
                return Transformer2D(c, heads, cfg["cross_attention_dim"], g, cfg.get("use_linear_projection", False))
            return SpatialAttention(c, hd, g, eps)

        self.down, skips, cin = nn.ModuleList(), [ch[0]], ch[0]
        for i, t in enumerate(cfg["down_block_types"]):
            blk = nn.Module()
            blk.res = nn.ModuleList()
            blk.att = nn.ModuleList()
            for _ in range(lpb):
                blk.res.append(Resnet(cin, ch[i], temb, g, eps))
                blk.att.append(attn(ch[i]) if "Attn" in t else nn.Identity())
                cin = ch[i]
                skips.append(cin)
            last = i == len(ch) - 1
            pad = cfg.get("downsample_padding", 1)
            blk.downsample = None if last else nn.Conv2d(cin, cin, 3, stride=2, padding=pad)
            blk.pad0 = not last and pad == 0
            if not last:
                skips.append(cin)
            self.down.append(blk)
        self.mid_res = nn.ModuleList([Resnet(cin, cin, temb, g, eps), Resnet(cin, cin, temb, g, eps)])
        self.mid_att = attn(cin)
        self.up = nn.ModuleList()
        rch = list(reversed(ch))
        for i, t in enumerate(cfg["up_block_types"]):
            blk = nn.Module()
            blk.res, blk.att = nn.ModuleList(), nn.ModuleList()
            for _ in range(lpb + 1):
                s = skips.pop()
                blk.res.append(Resnet(cin + s, rch[i], temb, g, eps))
                blk.att.append(attn(rch[i]) if "Attn" in t else nn.Identity())
                cin = rch[i]
            last = i == len(ch) - 1
            blk.upsample = None if last else nn.Conv2d(cin, cin, 3, padding=1)
            self.up.append(blk)
        self.norm_out = nn.GroupNorm(g, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, ctx=None):
        temb = timestep_embedding(t, self.ch0, self.flip, self.shift).to(x.dtype)
        temb = self.time2(F.silu(self.time1(temb)))
        h = self.conv_in(x)
        skips = [h]
        for blk in self.down:
            for r, a in zip(blk.res, blk.att):
                h = r(h, temb)
                h = h if isinstance(a, nn.Identity) else a(h, ctx)
                skips.append(h)
            if blk.downsample is not None:
                h = blk.downsample(F.pad(h, (0, 1, 0, 1)) if blk.pad0 else h)
                skips.append(h)
        h = self.mid_res[0](h, temb)
        h = self.mid_att(h, ctx)
        h = self.mid_res[1](h, temb)
        for blk in self.up:
            for r, a in zip(blk.res, blk.att):
                h = r(torch.cat([h, skips.pop()], dim=1), temb)
                h = h if isinstance(a, nn.Identity) else a(h, ctx)
            if blk.upsample is not None:
                h = blk.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def cuda_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    spec = json.loads(sys.argv[1])
    reps = spec.get("reps", 20)
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "results": []}
    for case in spec["cases"]:
        cfg, b = case["config"], case["batch"]
        dtype = getattr(torch, case.get("dtype", "float16"))
        torch.manual_seed(0)
        model = UNet(cfg).to("cuda", dtype).eval()
        params = sum(p.numel() for p in model.parameters())
        s = cfg["sample_size"]
        x = torch.randn(b, cfg["in_channels"], s, s, device="cuda", dtype=dtype)
        t = torch.full((b,), 500, device="cuda", dtype=torch.long)
        ctx = torch.randn(b, 77, cfg["cross_attention_dim"], device="cuda", dtype=dtype) if cfg.get("cross_attention_dim") else None
        r = {"name": case["name"], "params": params}
        with torch.no_grad():
            r["eager_ms"] = cuda_ms(lambda: model(x, t, ctx), reps)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(x, t, ctx)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(x, t, ctx)
            r["graph_ms"] = cuda_ms(graph.replay, reps)
            if case.get("compile"):
                t0 = time.time()
                cm = torch.compile(model)
                cm(x, t, ctx)
                r["compile_seconds"] = time.time() - t0
                r["compile_ms"] = cuda_ms(lambda: cm(x, t, ctx), reps)
        out["results"].append(r)
        del model
        torch.cuda.empty_cache()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
