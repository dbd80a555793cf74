#!/usr/bin/python3
"""The CLIP image encoder in PyTorch on the GPU: timings, and random Hugging Face models for focuspatch to compare against.

Subcommands:

  time    Times the image tower forward (fp16 by default) for each preset, batch and mode, and prints a
          markdown table; --json PATH also writes every row. The model is transformers'
          CLIPVisionModelWithProjection built from a CLIPVisionConfig (random weights, nothing
          downloaded, attn_implementation="sdpa"), or, when transformers is missing or --impl own is
          given, a minimal OpenAI-style pre-LN ViT (fused qkv, F.scaled_dot_product_attention,
          QuickGELU). Either way every token goes through post_layernorm and the projection (CLS first),
          as focuspatch's VisionRequest does by default; the FLOP count is bench_clip.cpp's.
  export  Writes a randomly initialised, seeded Hugging Face CLIPModel (vision tower as the preset, text
          tower as the released model of that size) as a folder: config.json + model.safetensors.
  embed   Runs an exported folder's image tower in fp32 and fp16 on preprocessed pixels (.npy,
          [B, 3, H, W] float32) and writes image_embeds_{fp32,fp16}.npy [B, D] and
          patch_tokens_{fp32,fp16}.npy [B, T, D] (every token through post_layernorm and
          visual_projection, CLS first; float32 arrays either way) and embed_info.json.

Modes of `time`:
  eager           the module as it is, under torch.inference_mode()
  compile         torch.compile(module, mode=--compile-mode, dynamic=False), one fresh compilation per
                  (preset, batch) after torch._dynamo.reset(); the first call's wall time is reported as
                  compile_s. Unavailable (reported, not fatal) on torch < 2.0.
  compile:MODE    the same with an explicit mode: default, reduce-overhead, max-autotune,
                  max-autotune-no-cudagraphs

--compile-mode defaults to reduce-overhead: it compiles as fast as "default" (cuBLAS for the GEMMs,
Triton for the fused layer norm / bias / QuickGELU / residual kernels) and replays the forward as CUDA
graphs, which removes PyTorch's per-kernel launch cost: at batch 1 an eager ViT is expected to be bound
by the CPU's kernel launches rather than by the GPU. The max-autotune modes benchmark Triton GEMM
templates for every GEMM shape of every batch; by our estimate (not measured) that adds tens of seconds
to minutes per case, more than the ~4 minute budget of the default set allows, for GEMMs on which cuBLAS
is already expected to be close to the roof. Ask for them explicitly (compile:max-autotune-no-cudagraphs).

Timing: --warmup untimed calls after the first one, then --runs calls, each started on an idle GPU
(torch.cuda.synchronize() before it) and timed with a pair of CUDA events: latency of one forward as a
caller that waits for its result sees it, CPU launch time included. Reported: median and min ms per
forward, images/s and TFLOP/s at the median, torch.cuda.max_memory_allocated() over the case (weights
included). Cases run mode by mode (all eager cases first), and the JSON file is rewritten after each
case; once --time-budget seconds have passed no new case is started (those rows say "skipped").

Usage on the GPU machine (PyTorch 2.x with CUDA, transformers; no network needed):
  python3 bench/pytorch_gpu.py time --json /tmp/torch_gpu.json
  python3 bench/pytorch_gpu.py time --presets ViT-B/16 --batches 1 8 64 --modes eager compile compile:default
  python3 bench/pytorch_gpu.py export --preset ViT-B/16 --seed 0 --out /tmp/hf-vit-b16
  build/tools/focuspatch-convert /tmp/hf-vit-b16 --no-tokenizer -o /tmp/vit-b16.fpw
  python3 bench/pytorch_gpu.py embed --model /tmp/hf-vit-b16 --pixels pixels.npy --out /tmp/hf-embeds
The CPU check of the script itself (Debian's torch 1.13, no transformers: own ViT, manual attention):
  /usr/bin/python3 bench/pytorch_gpu.py time --device cpu --dtype float32 --presets tiny --batches 1 2 \\
      --modes eager --json /tmp/x.json
"""
import argparse
import contextlib
import copy
import gc
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# The GPU machine has no network: never let transformers try the Hub (a local folder needs none).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


@dataclass(frozen=True)
class Preset:
    image: int
    patch: int
    width: int
    layers: int
    heads: int
    mlp: int
    embed: int
    text_width: int
    text_heads: int
    text_layers: int

    @property
    def tokens(self):
        return (self.image // self.patch) ** 2 + 1


# OpenAI's released CLIP shapes (the same as focuspatch-convert --random); "tiny" is for checking the
# script on a CPU. Text towers: vocabulary 49408, context 77.
PRESETS = {
    "ViT-B/32": Preset(224, 32, 768, 12, 12, 3072, 512, 512, 8, 12),
    "ViT-B/16": Preset(224, 16, 768, 12, 12, 3072, 512, 512, 8, 12),
    "ViT-L/14": Preset(224, 14, 1024, 24, 16, 4096, 768, 768, 12, 12),
    "ViT-L/14@336px": Preset(336, 14, 1024, 24, 16, 4096, 768, 768, 12, 12),
    "tiny": Preset(64, 16, 64, 2, 1, 256, 32, 64, 1, 2),
}
ALIASES = {"ViT-L/14-336": "ViT-L/14@336px", "ViT-L/14-336px": "ViT-L/14@336px"}
DEFAULT_PRESETS = ["ViT-B/16", "ViT-L/14@336px"]
VOCAB, CONTEXT, START_OF_TEXT, END_OF_TEXT = 49408, 77, 49406, 49407
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def preset_name(name):
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset '{name}' (known: {', '.join(PRESETS)}, or ViT-L/14-336)")
    return name


def vision_flops(p, batch):
    """bench_clip.cpp's count: 2 FLOP per multiply-add of the linear layers and attention, projection of every token."""
    t, w, m = p.tokens, p.width, p.mlp
    patch_embed = 2 * (t - 1) * 3 * p.patch * p.patch * w
    layer = 2 * t * w * (3 * w + w + 2 * m) + 4 * t * t * w
    return batch * (patch_embed + p.layers * layer + 2 * t * w * p.embed)


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")  # torch >= 2.0


def torch_major():
    return int(torch.__version__.split(".")[0])


def has_compile():
    return hasattr(torch, "compile") and torch_major() >= 2


def import_transformers():
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def require_transformers(command):
    transformers = import_transformers()
    if transformers is None:
        sys.exit(f"{command}: needs Hugging Face transformers (and safetensors), which this Python ({sys.executable}, "
                 f"torch {torch.__version__}) cannot import; run it where they are installed, e.g. the GPU machine")
    return transformers


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Models.

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-LN residual block of OpenAI's CLIP, batch first, q/k/v from one fused linear layer."""

    def __init__(self, width, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), QuickGELU(), nn.Linear(mlp, width))

    def forward(self, x):
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if HAS_SDPA:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # torch < 2.0; softmax in fp32 as SDPA's kernels keep it
            scores = (q @ k.transpose(-2, -1)) * (w // self.heads) ** -0.5
            y = scores.float().softmax(dim=-1).to(q.dtype) @ v
        x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.ln_2(x))


class OwnVisionTransformer(nn.Module):
    """OpenAI's CLIP image tower, minimal (pytorch_compare.py's, with fused attention): returns every token
    after ln_post and the projection, [B, T, D], CLS first."""

    def __init__(self, p):
        super().__init__()
        scale = p.width ** -0.5
        self.conv1 = nn.Conv2d(3, p.width, kernel_size=p.patch, stride=p.patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(p.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(p.tokens, p.width))
        self.ln_pre = nn.LayerNorm(p.width)
        self.blocks = nn.Sequential(*[Block(p.width, p.heads, p.mlp) for _ in range(p.layers)])
        self.ln_post = nn.LayerNorm(p.width)
        self.proj = nn.Linear(p.width, p.embed, bias=False)

    def forward(self, pixels):
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        return self.proj(self.ln_post(self.blocks(self.ln_pre(x))))


class EveryTokenProjection(nn.Module):
    """transformers' CLIPVisionModelWithProjection projects only the class token (post_layernorm of CLS,
    then visual_projection); focuspatch needs every token, so this runs its vision_model and applies
    the same post_layernorm and visual_projection to all of them. Token 0 is its image_embeds."""

    def __init__(self, vision_model, visual_projection):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixels):
        out = self.vision_model(pixel_values=pixels)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.visual_projection(self.vision_model.post_layernorm(hidden))


def hf_vision_config(p):
    """CLIPVisionConfig's arguments (a dict, which every transformers version's CLIPConfig also accepts)."""
    return dict(hidden_size=p.width, intermediate_size=p.mlp, num_hidden_layers=p.layers, num_attention_heads=p.heads,
                patch_size=p.patch, image_size=p.image, projection_dim=p.embed, num_channels=3, hidden_act="quick_gelu",
                layer_norm_eps=1e-5)


def hf_text_config(p):
    return dict(vocab_size=VOCAB, hidden_size=p.text_width, intermediate_size=4 * p.text_width,
                num_hidden_layers=p.text_layers, num_attention_heads=p.text_heads, max_position_embeddings=CONTEXT,
                projection_dim=p.embed, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                bos_token_id=START_OF_TEXT, eos_token_id=END_OF_TEXT)


def attn_implementation_of(model):
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def build_timed_model(p, impl, transformers, attn):
    """(module, description of the model, description of its attention)."""
    if impl == "transformers":
        config = transformers.CLIPVisionConfig(**hf_vision_config(p))
        vision = transformers.CLIPVisionModelWithProjection._from_config(config, attn_implementation=attn)
        used = attn_implementation_of(vision)
        if used != attn:
            print(f"warning: asked transformers for attn_implementation={attn!r}, the model says {used!r}", file=sys.stderr)
        model = EveryTokenProjection(vision.vision_model, vision.visual_projection)
        return model, "transformers CLIPVisionModelWithProjection", f"{used} (transformers)"
    attention = "F.scaled_dot_product_attention" if HAS_SDPA else \
        f"manual softmax(QK^T)V (torch {torch.__version__} has no F.scaled_dot_product_attention)"
    return OwnVisionTransformer(p), "own pre-LN ViT", attention


# ---------------------------------------------------------------------------------------------
# time

def parse_modes(items, default_compile_mode):
    modes = []
    for item in items:
        for part in item.split(","):
            if part == "eager":
                modes.append(("eager", None))
            elif part == "compile":
                modes.append((f"compile:{default_compile_mode}", default_compile_mode))
            elif part.startswith("compile:") and part[8:] in COMPILE_MODES:
                modes.append((part, part[8:]))
            elif part:
                sys.exit(f"--modes: unknown mode '{part}' (eager, compile, or compile:MODE with MODE one of "
                         f"{', '.join(COMPILE_MODES)})")
    return list(dict.fromkeys(modes))


def sdpa_context(backend):
    if backend == "auto":
        return None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        sys.exit(f"--sdpa-backend {backend}: torch {torch.__version__} has no torch.nn.attention.sdpa_kernel")
    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return lambda: sdpa_kernel(getattr(SDPBackend, names[backend]))


def release_compiled():
    """Forgets the previous case's compilation and CUDA-graph memory pools, so each compiled case starts afresh
    and its peak memory is its own (torch._dynamo.reset() resets the graph trees too in current versions;
    the explicit call is for older ones)."""
    if not has_compile():
        return
    torch._dynamo.reset()
    try:  # private APIs; nothing to release or count where they are missing
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees
        reset_cudagraph_trees()
        from torch._dynamo.utils import counters
        counters.clear()
    except Exception:
        pass


def unique_graphs():
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # an internal counter: absent in some versions, never worth failing a run for
        return None


def time_case(model, p, batch, compile_mode, args, device, dtype):
    """Times one (preset, batch, mode); returns the measured fields of its row."""
    release_compiled()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    fn, mark_step = model, None
    if compile_mode:
        fn = torch.compile(model, mode=compile_mode, dynamic=False)
        if compile_mode in CUDAGRAPH_MODES:  # tells the CUDA-graph trees that the previous output is dead
            mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    pixels = torch.randn(batch, 3, p.image, p.image, device=device, dtype=dtype)

    def call():
        if mark_step:
            mark_step()
        return fn(pixels)

    with torch.inference_mode(), (args.sdpa_context() if args.sdpa_context else contextlib.nullcontext()):
        start = time.perf_counter()
        out = call()
        synchronize(device)
        first_s = time.perf_counter() - start
        graphs = unique_graphs() if compile_mode else None
        start = time.perf_counter()
        for _ in range(args.warmup):
            out = call()
        synchronize(device)
        warmup_s = time.perf_counter() - start
        times_ms = []
        if device.type == "cuda":
            events = []
            for _ in range(args.runs):
                torch.cuda.synchronize(device)
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                out = call()
                end.record()
                events.append((begin, end))
            torch.cuda.synchronize(device)
            times_ms = [begin.elapsed_time(end) for begin, end in events]
        else:
            for _ in range(args.runs):
                start = time.perf_counter()
                out = call()
                times_ms.append((time.perf_counter() - start) * 1e3)
        shape = list(out.shape)
        finite = bool(torch.isfinite(out).all())
    del out
    median_ms, min_ms = statistics.median(times_ms), min(times_ms)
    return dict(
        median_ms=round(median_ms, 4), min_ms=round(min_ms, 4), images_per_s=round(batch / median_ms * 1e3, 2),
        tflops=round(vision_flops(p, batch) / median_ms * 1e-9, 2),
        peak_mem_mib=round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1) if device.type == "cuda" else None,
        compile_s=round(first_s, 2) if compile_mode else None, first_call_s=round(first_s, 3), warmup_s=round(warmup_s, 2),
        dynamo_graphs=graphs, output_shape=shape, output_finite=finite, times_ms=[round(t, 4) for t in times_ms])


def markdown_table(rows):
    lines = ["| preset | px | batch | mode | median ms | min ms | images/s | TFLOP/s | peak MiB | compile s | status |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]

    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    for r in rows:
        lines.append(f"| {r['preset']} | {r['image_size']} | {r['batch']} | {r['mode']} | {cell(r.get('median_ms'), '.3f')} | "
                     f"{cell(r.get('min_ms'), '.3f')} | {cell(r.get('images_per_s'), '.1f')} | {cell(r.get('tflops'), '.2f')} | "
                     f"{cell(r.get('peak_mem_mib'), '.0f')} | {cell(r.get('compile_s'), '.1f')} | {r['status']} |")
    return "\n".join(lines)


def write_json(path, meta, rows):
    """{"meta": {...}, "rows": [...]}, one row a line; written whole and renamed, so a killed run leaves a valid file."""
    if path:
        tmp = Path(str(path) + ".tmp")
        body = ",\n  ".join(json.dumps(row) for row in rows)
        tmp.write_text(f'{{"meta": {json.dumps(meta)},\n "rows": [\n  {body}\n ]}}\n')
        tmp.replace(path)


def cmd_time(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"time: CUDA is not available to torch {torch.__version__} (built for CUDA {torch.version.cuda}); "
                 "for a check on the CPU use --device cpu --dtype float32")
    dtype_name = args.dtype or ("float16" if device.type == "cuda" else "float32")
    dtype = DTYPES[dtype_name]
    transformers = import_transformers()
    impl = args.impl
    if impl == "auto":
        impl = "transformers" if transformers is not None else "own"
    if impl == "transformers" and transformers is None:
        sys.exit("time --impl transformers: transformers cannot be imported here (--impl own or auto uses the own ViT)")
    modes = parse_modes(args.modes, args.compile_mode)
    args.sdpa_context = sdpa_context(args.sdpa_backend)
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)  # CUDA events are recorded on the current device
        torch.backends.cudnn.benchmark = True  # the patch-embedding convolution: pick the fastest algorithm once

    transformers_version = transformers.__version__ if transformers is not None else None
    gpu = device_name(device)
    meta = dict(torch_version=torch.__version__, cuda_version=torch.version.cuda,
                cudnn_version=torch.backends.cudnn.version() if device.type == "cuda" else None,
                transformers_version=transformers_version, gpu_name=gpu, device=str(device), dtype=dtype_name, impl=impl,
                attn_implementation=args.attn if impl == "transformers" else None, sdpa_backend=args.sdpa_backend,
                warmup=args.warmup, runs=args.runs, python=platform.python_version(),
                started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers_version or 'not installed'}, "
          f"{device}: {gpu}, {dtype_name}, model: {impl}, modes: {' '.join(m for m, _ in modes)}, "
          f"warm-up {args.warmup}, runs {args.runs}", flush=True)

    started = time.perf_counter()
    models = {}
    rows = []
    failed = False
    for mode, compile_mode in modes:
        for name in args.presets:
            p = PRESETS[name]
            for batch in args.batches:
                row = dict(preset=name, image_size=p.image, batch=batch, mode=mode, compile_mode=compile_mode, dtype=dtype_name,
                           device=str(device), median_ms=None, min_ms=None, images_per_s=None, tflops=None,
                           gflop_per_image=round(vision_flops(p, 1) * 1e-9, 3), torch_version=torch.__version__,
                           transformers_version=transformers_version, gpu_name=gpu)
                elapsed = time.perf_counter() - started
                if compile_mode and not has_compile():
                    row["status"] = f"unavailable: torch {torch.__version__} has no torch.compile"
                elif elapsed > args.time_budget:
                    row["status"] = f"skipped: {elapsed:.0f} s > --time-budget {args.time_budget:g} s"
                else:
                    try:
                        if name not in models:
                            build_start = time.perf_counter()
                            torch.manual_seed(args.seed)
                            module, description, attention = build_timed_model(p, impl, transformers, args.attn)
                            module = module.to(device=device, dtype=dtype).eval()
                            weights_mib = sum(t.numel() * t.element_size() for t in module.parameters()) / 2 ** 20
                            models[name] = (module, description, attention, round(weights_mib, 1))
                            print(f"{name}: {description}, attention {attention}, {weights_mib:.0f} MiB of weights, "
                                  f"built in {time.perf_counter() - build_start:.1f} s", flush=True)
                        module, description, attention, weights_mib = models[name]
                        row.update(model=description, attention=attention, weights_mib=weights_mib)
                        row.update(time_case(module, p, batch, compile_mode, args, device, dtype))
                        row["status"] = "ok" if row["output_finite"] else "ok (output not finite)"
                    except Exception as error:  # one failing case (OOM, compiler error) must not lose the others
                        failed = True
                        traceback.print_exc()
                        message = str(error).strip().splitlines()
                        row["status"] = f"failed: {type(error).__name__}: {message[0][:200] if message else ''}"
                rows.append(row)
                write_json(args.json, meta, rows)
                extra = ""
                if row.get("compile_s") is not None:
                    extra = f", first call (compilation) {row['compile_s']:.1f} s, warm-up {row['warmup_s']:.1f} s"
                    if row.get("dynamo_graphs") is not None:
                        extra += f", dynamo graphs {row['dynamo_graphs']}"
                if row.get("median_ms") is not None:
                    print(f"  {name} batch {batch} {mode}: median {row['median_ms']:.3f} ms, min {row['min_ms']:.3f} ms, "
                          f"{row['images_per_s']:.1f} images/s, {row['tflops']:.2f} TFLOP/s{extra}", flush=True)
                else:
                    print(f"  {name} batch {batch} {mode}: {row['status']}", flush=True)
    meta["total_s"] = round(time.perf_counter() - started, 1)
    write_json(args.json, meta, rows)
    print()
    print(markdown_table(rows))
    print(f"\n{meta['total_s']:.0f} s in all" + (f"; rows in {args.json}" if args.json else ""))
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# export, embed

def cmd_export(args):
    transformers = require_transformers("export")
    p = PRESETS[args.preset]
    config = transformers.CLIPConfig(text_config=hf_text_config(p), vision_config=hf_vision_config(p), projection_dim=p.embed)
    torch.manual_seed(args.seed)
    model = transformers.CLIPModel(config).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Keyword names differ between transformers versions (safetensors is the only format in newer ones).
    accepted = inspect.signature(model.save_pretrained).parameters
    options = {}
    if "safe_serialization" in accepted:
        options["safe_serialization"] = True
    if "max_shard_size" in accepted:
        options["max_shard_size"] = "50GB"  # one file: the largest preset is 1.7 GB in fp32
    model.save_pretrained(str(out), **options)
    with torch.no_grad():
        checksum = float(sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point()))
    params = sum(t.numel() for t in model.parameters())
    info = dict(preset=args.preset, seed=args.seed, parameters=params, checksum=checksum, torch_version=torch.__version__,
                transformers_version=transformers.__version__)
    (out / "export_info.json").write_text(json.dumps(info, indent=1) + "\n")
    files = sorted(f.name for f in out.iterdir())
    print(f"wrote {out}: {', '.join(files)}; {args.preset}, seed {args.seed}, {params / 1e6:.1f} M parameters, "
          f"sum of all weights {checksum:.6g}")
    if not (out / "model.safetensors").exists():
        print(f"warning: no single model.safetensors in {out} (this transformers sharded it or wrote another format)",
              file=sys.stderr)
    return 0


def no_tf32():
    """fp32 means fp32 here: cuDNN's convolutions default to TF32 (the matmul default is already off). Only the
    legacy switches are set, which keep both TF32 APIs of torch >= 2.9 consistent."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def cmd_embed(args):
    import numpy as np
    transformers = require_transformers("embed")
    folder = Path(args.model)
    if not (folder / "config.json").exists():
        sys.exit(f"embed: {folder}: no config.json; expected a folder written by `export` (or another CLIPModel folder)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"embed: CUDA is not available to torch {torch.__version__}; use --device cpu")
    try:
        pixels = np.load(args.pixels, allow_pickle=False)
    except (OSError, ValueError) as error:
        sys.exit(f"embed: {args.pixels}: cannot read it as a .npy array ({error})")
    if not np.issubdtype(pixels.dtype, np.floating):
        sys.exit(f"embed: {args.pixels}: dtype {pixels.dtype}, expected float32 preprocessed pixels")
    model = transformers.CLIPModel.from_pretrained(str(folder), attn_implementation=args.attn).float().eval()
    size = model.config.vision_config.image_size
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] != size or pixels.shape[3] != size:
        sys.exit(f"embed: {args.pixels}: shape {list(pixels.shape)}, expected [B, 3, {size}, {size}] for this model")
    pixels = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    if device.type == "cuda":
        no_tf32()
    vision = EveryTokenProjection(model.vision_model, model.visual_projection)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = {}, []
    info = dict(model=str(folder), pixels=str(args.pixels), batch=int(pixels.shape[0]), device=str(device),
                attn_implementation=attn_implementation_of(model), torch_version=torch.__version__,
                transformers_version=transformers.__version__, outputs={})
    for name in sorted(args.dtypes, key=lambda d: d != "float32"):
        dtype = DTYPES[name]
        tower = copy.deepcopy(vision).to(device=device, dtype=dtype)
        try:
            with torch.inference_mode():
                x = pixels.to(device=device, dtype=dtype)
                tokens = tower(x)
                # image_embeds as transformers computes them (pooler_output = post_layernorm of CLS, projected),
                # which must equal token 0 of the every-token path.
                image_embeds = tower.visual_projection(tower.vision_model(pixel_values=x).pooler_output)
        except RuntimeError as error:  # e.g. fp16 on a CPU whose torch has no half-precision kernel for an op
            failed.append(name)
            print(f"embed: {name} on {device} failed, no files for it: {str(error).strip().splitlines()[0]}", file=sys.stderr)
            continue
        finally:
            del tower
        tokens, image_embeds = tokens.float().cpu().numpy(), image_embeds.float().cpu().numpy()
        gap = float(np.abs(tokens[:, 0] - image_embeds).max() / max(np.abs(image_embeds).max(), 1e-30))
        short = SHORT_DTYPE[name]
        np.save(out / f"image_embeds_{short}.npy", image_embeds)
        np.save(out / f"patch_tokens_{short}.npy", tokens)
        results[name] = (image_embeds, tokens)
        info["outputs"][short] = dict(image_embeds=f"image_embeds_{short}.npy", patch_tokens=f"patch_tokens_{short}.npy",
                                      image_embeds_shape=list(image_embeds.shape), patch_tokens_shape=list(tokens.shape),
                                      token0_vs_image_embeds_max_rel=gap)
        print(f"{name}: image_embeds {list(image_embeds.shape)}, patch_tokens {list(tokens.shape)} (CLS first); "
              f"token 0 against transformers' image_embeds: max difference {gap:.2e} of the largest value")
    if "float32" in results:
        for name, (embeds, tokens) in results.items():
            if name == "float32":
                continue
            ref_embeds, ref_tokens = results["float32"]
            cos_embeds = cosines(embeds, ref_embeds)
            cos_tokens = cosines(tokens.reshape(-1, tokens.shape[-1]), ref_tokens.reshape(-1, ref_tokens.shape[-1]))
            info["outputs"][SHORT_DTYPE[name]]["cosine_to_fp32"] = dict(image_embeds_min=float(cos_embeds.min()),
                                                                        patch_tokens_min=float(cos_tokens.min()),
                                                                        patch_tokens_mean=float(cos_tokens.mean()))
            print(f"{name} against float32: cosine of image_embeds min {cos_embeds.min():.6f}; of tokens min "
                  f"{cos_tokens.min():.6f}, mean {cos_tokens.mean():.6f}")
    info["failed"] = failed
    (out / "embed_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}")
    return 1 if failed else 0


def cosines(a, b):
    import numpy as np
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    commands = parser.add_subparsers(dest="command", metavar="{time,export,embed}")
    commands.required = True

    timing = commands.add_parser("time", help="time the image tower forward")
    timing.add_argument("--presets", nargs="+", type=preset_name, default=DEFAULT_PRESETS,
                        help=f"default: {' '.join(DEFAULT_PRESETS)}; known: {' '.join(PRESETS)}")
    timing.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    timing.add_argument("--modes", nargs="+", default=["eager", "compile"],
                        help="eager, compile (with --compile-mode), compile:MODE; space or comma separated "
                             "(default: eager compile)")
    timing.add_argument("--compile-mode", choices=COMPILE_MODES, default="reduce-overhead",
                        help="torch.compile mode of 'compile' (default reduce-overhead: see above)")
    timing.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    timing.add_argument("--dtype", choices=sorted(DTYPES), help="default: float16 on CUDA, float32 on the CPU")
    timing.add_argument("--impl", choices=["auto", "transformers", "own"], default="auto",
                        help="auto: transformers' CLIP when it can be imported, else the own ViT")
    timing.add_argument("--attn", default="sdpa", help="transformers attn_implementation (default sdpa)")
    timing.add_argument("--sdpa-backend", choices=["auto", "flash", "efficient", "cudnn", "math"], default="auto",
                        help="restrict F.scaled_dot_product_attention to one kernel (default: torch's choice)")
    timing.add_argument("--warmup", type=int, default=5, help="untimed calls after the first (default 5)")
    timing.add_argument("--runs", type=int, default=20, help="timed calls per case (default 20)")
    timing.add_argument("--time-budget", type=float, default=210,
                        help="seconds after which no new case is started (default 210)")
    timing.add_argument("--seed", type=int, default=0)
    timing.add_argument("--json", help="write every row (and run metadata) to this file")

    export = commands.add_parser("export", help="write a random Hugging Face CLIPModel folder")
    export.add_argument("--preset", type=preset_name, default="ViT-B/16")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--out", required=True, help="folder to write (created; files in it are replaced)")

    embed = commands.add_parser("embed", help="image_embeds and projected tokens of an exported folder")
    embed.add_argument("--model", required=True, help="a folder written by export")
    embed.add_argument("--pixels", required=True, help=".npy of preprocessed pixels, [B, 3, H, W] float32")
    embed.add_argument("--out", required=True, help="folder for {image_embeds,patch_tokens}_{fp32,fp16}.npy and embed_info.json")
    embed.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "float16"])
    embed.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    embed.add_argument("--attn", default="sdpa", help="transformers attn_implementation (default sdpa)")

    args = parser.parse_args()
    if args.command == "time":
        if args.warmup < 0 or args.runs < 1 or min(args.batches) < 1:
            parser.error("--warmup must be >= 0, --runs and every batch >= 1")
        return cmd_time(args)
    if args.command == "export":
        return cmd_export(args)
    return cmd_embed(args)


if __name__ == "__main__":
    sys.exit(main())
