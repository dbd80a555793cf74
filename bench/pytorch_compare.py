#!/usr/bin/python3
"""The ViT-B/16 image encoder forward in PyTorch on the CPU, for comparison with bench_clip.

OpenAI's VisionTransformer (clip/model.py) rebuilt minimally with random weights: conv patch
embedding, class token, position embedding, ln_pre, pre-LN residual blocks with nn.MultiheadAttention
and QuickGELU, ln_post. As in bench_clip (VisionRequest's default, what FocusPatch uses) ln_post and
the projection are applied to every token, not only the class token; the FLOP count is the same
formula as bench_clip.cpp's.

Usage: /usr/bin/python3 bench/pytorch_compare.py [--threads 2] [--batches 1 8] [--runs 5]
Needs the Debian torch (python3-torch), not the python3 on PATH in this project's machines.
"""
import argparse
import ctypes
import os
import statistics
import sys
import time

# Debian's torch runs its own ops on OpenMP threads and its GEMMs on OpenBLAS's separate pthread
# pool. With libgomp's default wait policy the idle OpenMP threads spin while OpenBLAS works (and
# the other way round), so on 2 cores every op fights for them: measured here, ViT-B/16 batch 1
# took 0.94 s instead of 0.33 s. Passive waiting is the fair setting; it must be set before libgomp
# starts, i.e. before torch is imported. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn

PRESETS = {  # image, patch, width, layers, embed (heads = width / 64, MLP = 4 * width)
    "ViT-B/16": (224, 16, 768, 12, 512),
    "ViT-B/32": (224, 32, 768, 12, 512),
    "ViT-L/14": (224, 14, 1024, 24, 768),
}


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image, patch, width, layers, embed):
        super().__init__()
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((image // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.Sequential(*[ResidualAttentionBlock(width, width // 64) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)  # [B, grid^2, W]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_pre(x).permute(1, 0, 2)  # OpenAI's blocks run [T, B, W]
        x = self.blocks(x).permute(1, 0, 2)
        return self.ln_post(x) @ self.proj  # every token: [B, T, D]; [:, 0] is the image embedding


def vision_flops(image, patch, width, layers, embed, batch):
    t = (image // patch) ** 2 + 1
    patch_embed = 2 * (t - 1) * 3 * patch * patch * width
    layer = 2 * t * width * (3 * width + width + 2 * 4 * width) + 4 * t * t * width
    return batch * (patch_embed + layers * layer + 2 * t * width * embed)


def blas_in_use():
    """Which BLAS torch's fp32 GEMMs reach: the Debian build links the generic libblas.so.3, which
    the alternatives system points at OpenBLAS or at the (very slow) reference BLAS."""
    config = torch.__config__.show()
    settings = config.replace(",", "\n").split()
    blas_info = next((part.split("=", 1)[1] for part in settings if part.startswith("BLAS_INFO=")), "?")
    a = torch.randn(64, 64)
    (a @ a).sum().item()  # make sure the BLAS library is loaded
    with open("/proc/self/maps") as maps:
        libs = sorted({line.split()[-1] for line in maps if ".so" in line and ("blas" in line or "mkl" in line)})
    if any("mkl" in lib for lib in libs):
        kind = "MKL"
    elif any("openblas" in lib for lib in libs):
        kind = "OpenBLAS"
    elif any("/blas/" in lib or "libblas" in lib for lib in libs):
        kind = "reference BLAS"
    else:
        kind = "unknown"
    return kind, blas_info, libs


def openblas_threads(libs):
    """OpenBLAS keeps its own thread pool (OPENBLAS_NUM_THREADS, default: every core), separate
    from the OpenMP threads torch.set_num_threads() controls."""
    for lib in libs:
        if "openblas" in lib:
            try:
                return ctypes.CDLL(lib).openblas_get_num_threads()
            except (OSError, AttributeError):
                return None
    return None


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B/16", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per batch (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-gemm", action="store_true", help="skip the single-GEMM figures")
    parser.add_argument("--allow-reference-blas", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    kind, blas_info, libs = blas_in_use()
    openblas_dir = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
    print(f"torch {torch.__version__}, BLAS_INFO={blas_info}, GEMMs run on: {kind}")
    for lib in libs:
        print(f"  loaded {lib}")
    print(f"  {openblas_dir} {'present' if os.path.isdir(openblas_dir) else 'MISSING (install libopenblas0-pthread)'}")
    print(f"  oneDNN (conv): {torch.backends.mkldnn.is_available()}, torch threads: {torch.get_num_threads()}, "
          f"OpenBLAS threads: {openblas_threads(libs)}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    if kind not in ("OpenBLAS", "MKL") and not args.allow_reference_blas:
        sys.exit("torch is not using an optimised BLAS; the comparison would be meaningless "
                 "(install libopenblas0-pthread, or pass --allow-reference-blas)")

    image, patch, width, layers, embed = PRESETS[args.model]
    torch.manual_seed(0)
    model = VisionTransformer(image, patch, width, layers, embed).eval()
    with torch.inference_mode():
        if not args.no_gemm:
            # nn.Linear shapes of one block at batch 8 (rows = tokens), the same as bench_gemm's.
            rows = 8 * ((image // patch) ** 2 + 1)
            shapes = (("qkv", width, 3 * width), ("out", width, width), ("fc", width, 4 * width), ("proj", 4 * width, width))
            for name, k, n in shapes:
                x, w = torch.randn(rows, k), torch.randn(n, k)
                seconds = timed(lambda: torch.nn.functional.linear(x, w), args.runs, args.warmup)
                gflops = 2 * rows * k * n / seconds * 1e-9
                print(f"gemm {name:5s} {rows}x{k}->{n}: {seconds * 1e3:8.2f} ms  {gflops:7.1f} GFLOP/s")
        for batch in args.batches:
            images = torch.randn(batch, 3, image, image)
            seconds = timed(lambda: model(images), args.runs, args.warmup)
            flops = vision_flops(image, patch, width, layers, embed, batch)
            print(f"{args.model} batch {batch}: {seconds * 1e3:8.1f} ms (median of {args.runs})  "
                  f"{batch / seconds:6.2f} images/s  {flops / seconds * 1e-9:6.1f} GFLOP/s  "
                  f"({flops * 1e-9 / batch:.1f} GFLOP/image)")


if __name__ == "__main__":
    main()
