#!/usr/bin/python3
"""focuspatch against PyTorch and ONNX Runtime on the CPU: the same CLIP ViT-B/16 shapes, one run.

Cases: the image tower at 224 px, batch 1 and batch 8 (every token through ln_post and the projection,
as VisionRequest's default and pytorch_compare.py's model do), and the text tower on 32 prompts of
77 tokens (width 512, 8 heads, 12 layers, causal mask, vocabulary 49408, end-of-text token projected).
Every implementation gets random weights of those shapes (not the same weights: ours are
random_clip_plan's, PyTorch's and ONNX Runtime's are one torch.manual_seed(0) model exported with
torch.onnx.export, and the two are checked to give the same outputs).

  ours         build/bench/bench_clip (Google Benchmark), one process per round running each case as
               --benchmark_repetitions of one iteration, --benchmark_format=json
  PyTorch      eager, torch.inference_mode(), torch.set_num_threads(threads), OMP_WAIT_POLICY=PASSIVE
               (see pytorch_compare.py), in a worker process that keeps its models loaded
  ours-bf16    the same bench_clip, its bf16-compute benchmarks: CpuBackend with --precision bf16
               (AVX512-BF16 or AMX as cpuid allows; the path ran is in the benchmark's label)
  pytorch-bf16 the PyTorch model under torch.autocast("cpu", dtype=torch.bfloat16) (oneDNN)
  pytorch-int8 torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8): int8 weights,
               activations quantized per batch (the attention's packed in-projection stays fp32, as
               PyTorch leaves nn.MultiheadAttention's weights alone)
  ONNX Runtime bench/ort_time.mjs --serve (onnxruntime-node, CPU provider, intraOpNumThreads = threads,
               interOpNumThreads 1, graph optimization "all"), sessions kept open

The three are interleaved: each round runs every case once (or --per-round times) in each
implementation, rotating which goes first, so the machine's noise is shared between them. Reported:
median and best per case, GFLOP/s (the FLOP count of bench_clip.cpp), the ratios ours / PyTorch and
ours / ORT of the medians and of the best runs (below 1: ours is faster), and the median of the
per-round ratios. Then the peak resident memory of focuspatch-embed on one image from a random
ViT-B/16 .fpw, fp32 and fp16, beside the file size.

Usage: /usr/bin/python3 bench/compare.py --build build --threads 2 --runs 7
Needs: the Debian torch (/usr/bin/python3), node with onnxruntime-node
(npm install --ignore-scripts --prefix bench/.node onnxruntime-node), and a build configured with
-DFOCUSPATCH_BUILD_BENCH=ON with the targets bench_clip, focuspatch-convert and focuspatch-embed.
Exported .onnx files, inputs and .fpw files go to BUILD/compare (reused when up to date).
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The shapes: OpenAI's ViT-B/16 CLIP.
IMAGE = dict(image=224, patch=16, width=768, layers=12, embed=512)
TEXT = dict(context=77, vocab=49408, width=512, layers=12, embed=512)
START_OF_TEXT, END_OF_TEXT = 49406, 49407
EXPORT_VERSION = 1  # bump when the exported models change

CASES = {  # name: (tower, batch, bench_clip benchmark, what one item is)
    "image-b1": ("image", 1, "encode_images/ViT-B/16/f32/b1", "images"),
    "image-b8": ("image", 8, "encode_images/ViT-B/16/f32/b8", "images"),
    "text-b32": ("text", 32, "encode_token_ids/ViT-B/16/32 prompts 77 tokens", "prompts"),
}
# bench_clip's benchmarks for ours-bf16 (bf16 products from the same fp32 weights).
OURS_BF16 = {
    "image-b1": "encode_images/ViT-B/16/bf16-compute/b1",
    "image-b8": "encode_images/ViT-B/16/bf16-compute/b8",
    "text-b32": "encode_token_ids/ViT-B/16/bf16-compute/32 prompts 77 tokens",
}
ENGINES = ("ours", "ours-bf16", "pytorch", "pytorch-bf16", "pytorch-int8", "ort")
PYTORCH_MODES = {"pytorch": "f32", "pytorch-bf16": "bf16", "pytorch-int8": "int8"}
# Which ratios the summary prints: (ours, other).
PAIRS = (("ours", "pytorch"), ("ours", "ort"), ("ours", "pytorch-int8"), ("ours-bf16", "pytorch-bf16"),
         ("ours-bf16", "pytorch-int8"), ("ours-bf16", "ours"))


def vision_flops(image, patch, width, layers, embed, batch):
    """bench_clip.cpp's count (2 FLOP per multiply-add of the linear layers and attention)."""
    t = (image // patch) ** 2 + 1
    patch_embed = 2 * (t - 1) * 3 * patch * patch * width
    layer = 2 * t * width * (3 * width + width + 2 * 4 * width) + 4 * t * t * width
    return batch * (patch_embed + layers * layer + 2 * t * width * embed)


def text_flops(context, width, layers, embed, sequences, **_):
    """bench_clip.cpp's text_flops: the causal attention's masked half is computed, so counted."""
    n, s, w, m = sequences, context, width, 4 * width
    layer = 2 * n * s * w * (3 * w + w + 2 * m) + n * 4 * s * s * w
    return layers * layer + 2 * n * w * embed


def case_flops(case):
    tower, batch, _, _ = CASES[case]
    if tower == "image":
        return vision_flops(batch=batch, **IMAGE)
    return text_flops(sequences=batch, **TEXT)


def case_inputs(work, case):
    """The input of one case as the ONNX/PyTorch models take it: (name, dtype, shape, file)."""
    tower, batch, _, _ = CASES[case]
    if tower == "image":
        return ("pixels", "float32", [batch, 3, IMAGE["image"], IMAGE["image"]], str(work / f"input-{case}.bin"))
    return ("ids", "int64", [batch, TEXT["context"]], str(work / f"input-{case}.bin"))


def write_inputs(work):
    import numpy as np
    for case in CASES:
        name, dtype, shape, path = case_inputs(work, case)
        if name == "pixels":  # preprocessed-looking pixels, roughly unit variance
            data = np.random.default_rng(12345).uniform(-2.0, 2.0, size=shape).astype(np.float32)
        else:  # bench_clip's prompts(): start of text, word ids, end of text at the last position
            data = np.empty(shape, dtype=np.int64)
            for i in range(shape[0]):
                data[i, 0], data[i, -1] = START_OF_TEXT, END_OF_TEXT
                for j in range(1, shape[1] - 1):
                    data[i, j] = (7919 * (i + 1) + 104729 * j) % START_OF_TEXT
        data.tofile(path)


# ---------------------------------------------------------------------------------------------
# PyTorch worker: models, ONNX export, timed runs; JSON lines on stdin/stdout.

def torch_worker(args):
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything torch prints goes to stderr, not into the protocol
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see pytorch_compare.py
    sys.path.insert(0, str(HERE))
    import warnings
    # The end-of-text gather's indices come from argmax, never negative, which is what this warns about.
    warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
    import numpy as np
    import torch
    from torch import nn
    import pytorch_compare as pc

    torch.set_num_threads(args.threads)
    kind, blas_info, libs = pc.blas_in_use()
    info = dict(torch=torch.__version__, blas=kind, blas_info=blas_info, blas_libs=libs,
                torch_threads=torch.get_num_threads(), openblas_threads=pc.openblas_threads(libs),
                omp_wait_policy=os.environ["OMP_WAIT_POLICY"], mkldnn=torch.backends.mkldnn.is_available())

    class MaskedBlock(pc.ResidualAttentionBlock):
        def forward(self, x, mask):
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
            return x + self.mlp(self.ln_2(x))

    class TextTransformer(nn.Module):
        """OpenAI's CLIP text tower (clip/model.py encode_text) with random weights."""

        def __init__(self, context, vocab, width, layers, embed):
            super().__init__()
            self.token_embedding = nn.Embedding(vocab, width)
            self.positional_embedding = nn.Parameter(0.01 * torch.randn(context, width))
            self.blocks = nn.ModuleList([MaskedBlock(width, width // 64) for _ in range(layers)])
            self.register_buffer("attn_mask", torch.full((context, context), float("-inf")).triu(1))
            self.ln_final = nn.LayerNorm(width)
            self.text_projection = nn.Parameter(width ** -0.5 * torch.randn(width, embed))

        def forward(self, ids):
            x = (self.token_embedding(ids) + self.positional_embedding).permute(1, 0, 2)
            for block in self.blocks:
                x = block(x, self.attn_mask)
            x = self.ln_final(x.permute(1, 0, 2))
            # The end-of-text token has the largest id; int32 because ORT's ArgMax may lack int64.
            eot = ids.to(torch.int32).argmax(dim=-1)
            return x[torch.arange(x.shape[0]), eot] @ self.text_projection

    torch.manual_seed(0)
    models = {"image": pc.VisionTransformer(**IMAGE).eval(), "text": TextTransformer(**TEXT).eval()}
    work = Path(args.work)
    onnx = {}
    for tower, model in models.items():
        path = work / f"vit-b16-{tower}.onnx"
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in model.parameters()))
        meta = dict(version=EXPORT_VERSION, torch=torch.__version__, checksum=checksum,
                    shapes=IMAGE if tower == "image" else TEXT)
        meta_path = path.with_suffix(".json")
        fresh = path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta
        if not fresh:
            name = "pixels" if tower == "image" else "ids"
            example = torch.randn(2, 3, IMAGE["image"], IMAGE["image"]) if tower == "image" else \
                torch.randint(0, END_OF_TEXT, (2, TEXT["context"]))
            output = "embeddings" if tower == "image" else "text_embeddings"
            start = time.perf_counter()
            with torch.no_grad():
                torch.onnx.export(model, (example,), str(path), input_names=[name], output_names=[output],
                                  dynamic_axes={name: {0: "batch"}, output: {0: "batch"}}, opset_version=17,
                                  do_constant_folding=True)
            meta_path.write_text(json.dumps(meta))
            info[f"export_{tower}_s"] = round(time.perf_counter() - start, 1)
        onnx[tower] = str(path)
    info["onnx"] = onnx
    protocol.write(json.dumps(info) + "\n")

    inputs, variants = {}, {}
    for line in sys.stdin:
        request = json.loads(line)
        case = request["case"]
        tower = CASES[case][0]
        if case not in inputs:
            _, dtype, shape, path = case_inputs(work, case)
            inputs[case] = torch.from_numpy(np.fromfile(path, dtype=dtype).reshape(shape))
        mode = request.get("mode", "f32")
        if mode == "int8" and (tower, mode) not in variants:
            variants[(tower, mode)] = torch.ao.quantization.quantize_dynamic(models[tower], {nn.Linear}, dtype=torch.qint8)
        model, x = variants.get((tower, mode), models[tower]), inputs[case]
        times = []
        # bf16: autocast runs the linear layers and matmuls in bf16 (oneDNN), LayerNorm and softmax in fp32.
        context = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
        with torch.inference_mode(), context:
            for _ in range(request.get("warmup", 0)):
                out = model(x)
            for _ in range(request.get("runs", 1)):
                start = time.perf_counter()
                out = model(x)
                times.append((time.perf_counter() - start) * 1e3)
        if request.get("output_file"):
            out.float().numpy().astype(np.float32).tofile(request["output_file"])
        protocol.write(json.dumps(dict(times_ms=times)) + "\n")


# ---------------------------------------------------------------------------------------------
# Driver.

class Worker:
    """A process answering one JSON line per JSON line."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"{self.proc.args[:3]} ended (exit status {self.proc.wait()}); its messages are above")
        answer = json.loads(line)
        if "error" in answer:
            sys.exit(f"{self.proc.args[:3]}: {answer['error']}")
        return answer

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def thread_env(threads):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("OPENBLAS_NUM_THREADS", str(threads))  # torch's GEMMs: OpenBLAS's own pool
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # only PyTorch is affected (pytorch_compare.py explains)
    return env


def run_ours(bench_clip, cases, repetitions, threads, bf16=False):
    """One bench_clip process: each case as `repetitions` repetitions of one iteration (after one
    untimed warm-up forward per case). Returns {case: [ms, ...]}, the process's measured fp32 and
    bf16 dot-product and AMX peaks (GFLOP/s; AMX 0 where absent) and the path the benchmarks report."""
    bench_name = {c: OURS_BF16[c] if bf16 else CASES[c][2] for c in cases}
    names = "|".join(bench_name[c] for c in cases)
    argv = [str(bench_clip), f"--benchmark_filter=^({names})(/|$)", "--benchmark_min_time=0.001",
            f"--benchmark_repetitions={repetitions}", "--benchmark_format=json"]
    env = thread_env(threads)
    env.pop("OMP_WAIT_POLICY")  # ours as a user runs it: libgomp's default
    if "OMP_WAIT_POLICY" in os.environ:
        env["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{bench_clip} failed ({done.returncode}):\n{done.stderr}")
    report = json.loads(done.stdout)
    times = {c: [] for c in cases}
    path = ""
    for b in report["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        if b.get("error_occurred"):
            sys.exit(f"{bench_clip}: '{b['name']}': {b.get('error_message')}")
        for c in cases:
            if b["name"].startswith(bench_name[c] + "/"):
                assert b["time_unit"] == "ms", b
                times[c].append(b["real_time"])  # per iteration, and each repetition is one iteration
                path = b.get("label", path)
    for c in cases:
        if len(times[c]) != repetitions:
            sys.exit(f"{bench_clip} reported {len(times[c])} runs of '{bench_name[c]}', not {repetitions}: renamed?")
    context = report["context"]
    return times, (float(context.get("fp32_fma_peak_GFLOPs", "nan")), float(context.get("bf16_dot_peak_GFLOPs", "nan")),
                   float(context.get("amx_bf16_peak_GFLOPs", "0"))), path


def onnx_request(work, onnx, case, runs, warmup, output_file=None):
    name, dtype, shape, path = case_inputs(work, case)
    return dict(model=onnx[CASES[case][0]], inputs=[dict(name=name, dtype=dtype, shape=shape, file=path)], runs=runs,
                warmup=warmup, output_file=output_file)


def peak_rss(argv, env):
    """Peak resident set size of a child process in bytes (getrusage through wait4)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {err}")
    return usage.ru_maxrss * 1024


def measure_memory(build, work, threads):
    convert, embed = build / "tools" / "focuspatch-convert", build / "tools" / "focuspatch-embed"
    for tool in (convert, embed):
        if not tool.exists():
            sys.exit(f"{tool} is missing: cmake --build {build} --target {tool.name}")
    image = work / "rss-image.png"
    if not image.exists():
        import numpy as np
        from PIL import Image
        Image.fromarray(np.random.default_rng(7).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(image)
    rows = []
    for dtype in ("f32", "f16"):
        weights = work / f"vit-b16-random-{dtype}.fpw"
        if not weights.exists():
            subprocess.run([str(convert), "--random", "ViT-B/16", "--seed", "0", "--dtype", dtype, "--no-tokenizer",
                            "-o", str(weights)], check=True, stdout=subprocess.DEVNULL)
        rss = peak_rss([str(embed), "--weights", str(weights), "--image", str(image), "--json", "--out", os.devnull],
                       thread_env(threads))
        rows.append((dtype, weights.stat().st_size, rss))
    return rows


def summarize(times, cases, peaks=None):
    """peaks: {engine: GFLOP/s of the path it ran} for the engines whose fraction of peak is known."""
    peaks = peaks or {}
    print()
    print(f"{'case':9} {'engine':12} {'runs':>4} {'median ms':>10} {'best ms':>9} {'GFLOP/s':>8} {'(best)':>7} {'%peak':>6} "
          f"{'items/s':>8}")
    for case in cases:
        flops, batch, unit = case_flops(case), CASES[case][1], CASES[case][3]
        for engine in ENGINES:
            t = [x for r in times[engine][case] for x in r]
            if not t:
                continue
            med, best = statistics.median(t), min(t)
            peak = f"{100 * flops / med * 1e-6 / peaks[engine]:6.1f}" if peaks.get(engine) else f"{'':6}"
            print(f"{case:9} {engine:12} {len(t):4d} {med:10.1f} {best:9.1f} {flops / med * 1e-6:8.1f} "
                  f"{flops / best * 1e-6:7.1f} {peak} {batch / med * 1e3:8.2f} {unit}/s")
    print("\nratios of times, ours / other (below 1: ours is faster)")
    print(f"{'case':9} {'ours':10} {'other':12} {'medians':>8} {'best':>6} {'per-round median':>17}")
    for case in cases:
        for mine, other in PAIRS:
            ours, theirs = times[mine][case], times[other][case]
            if not ours or not theirs:
                continue
            flat_o, flat_t = [x for r in ours for x in r], [x for r in theirs for x in r]
            paired = [statistics.median(a) / statistics.median(b) for a, b in zip(ours, theirs) if a and b]
            print(f"{case:9} {mine:10} {other:12} {statistics.median(flat_o) / statistics.median(flat_t):8.3f} "
                  f"{min(flat_o) / min(flat_t):6.3f} {statistics.median(paired):17.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--build", default="build", help="CMake build folder with bench/bench_clip and tools/ (default: build)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case and implementation (default 7)")
    parser.add_argument("--per-round", type=int, default=1,
                        help="timed runs per case and implementation in one round (default 1: fully interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case before the first round, PyTorch and ORT")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--work", help="folder for .onnx, inputs and .fpw files (default: BUILD/compare)")
    parser.add_argument("--node", default="node", help="the node program (default: node on PATH)")
    parser.add_argument("--ort-spin", choices=["default", "0", "1"], default="default",
                        help="ORT's intra-op spin-waiting (session.intra_op.allow_spinning); default: ORT's own (spinning)")
    parser.add_argument("--gap", type=float, default=0.5,
                        help="seconds of pause between implementations (lets spinning threads settle)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement of focuspatch-embed")
    parser.add_argument("--json-out", help="also write every timing to this JSON file")
    parser.add_argument("--allow-reference-blas", action="store_true")
    parser.add_argument("--worker", choices=["torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.runs < 1 or args.per_round < 1 or args.threads < 1:
        parser.error("--runs, --per-round and --threads must be at least 1")
    build = Path(args.build).resolve()
    work = Path(args.work).resolve() if args.work else build / "compare"
    if args.worker == "torch":
        args.work = str(work)
        return torch_worker(args)

    bench_clip = build / "bench" / "bench_clip"
    if any(e.startswith("ours") for e in args.engines) and not bench_clip.exists():
        sys.exit(f"{bench_clip} is missing: configure {build} with -DFOCUSPATCH_BUILD_BENCH=ON and build the target bench_clip")
    work.mkdir(parents=True, exist_ok=True)
    write_inputs(work)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, "
          f"threads {args.threads}, files in {work}", flush=True)

    env = thread_env(args.threads)
    workers = {}
    onnx = {}
    if any(e.startswith("pytorch") or e == "ort" for e in args.engines):  # the ORT models are exported by the torch worker
        workers["pytorch"] = Worker([sys.executable, str(Path(__file__).resolve()), "--worker", "torch", "--build", str(build),
                                     "--work", str(work), "--threads", str(args.threads)], env=env)
        info = workers["pytorch"].read()
        onnx = info["onnx"]
        print(f"PyTorch {info['torch']}: GEMMs on {info['blas']} ({info['blas_info']}), torch threads {info['torch_threads']}, "
              f"OpenBLAS threads {info['openblas_threads']}, OMP_WAIT_POLICY={info['omp_wait_policy']}, oneDNN {info['mkldnn']}"
              + "".join(f", exported {k[7:-2]} in {v} s" for k, v in info.items() if k.startswith("export_")), flush=True)
        if info["blas"] not in ("OpenBLAS", "MKL") and not args.allow_reference_blas:
            sys.exit("torch is not using an optimised BLAS; the comparison would be meaningless "
                     "(install libopenblas0-pthread, or pass --allow-reference-blas)")
    if "ort" in args.engines:
        argv = [args.node, str(HERE / "ort_time.mjs"), "--serve", "--threads", str(args.threads)]
        if args.ort_spin != "default":
            argv += ["--spin", args.ort_spin]
        workers["ort"] = Worker(argv, env=env)

    # Warm-up, and the check that PyTorch and ONNX Runtime compute the same function.
    import numpy as np
    for case in args.cases:
        outs = {}
        for engine in ("pytorch", "pytorch-bf16", "pytorch-int8", "ort"):
            if engine not in args.engines and not (engine == "pytorch" and "ort" in args.engines):
                continue
            out = str(work / f"output-{engine}-{case}.bin")
            if engine.startswith("pytorch"):
                workers["pytorch"].ask(dict(case=case, runs=0, warmup=args.warmup, output_file=out, mode=PYTORCH_MODES[engine]))
            else:
                answer = workers[engine].ask(onnx_request(work, onnx, case, 0, args.warmup, out))
                if case == args.cases[0]:
                    node = subprocess.run([args.node, "--version"], capture_output=True, text=True).stdout.strip()
                    print(f"ONNX Runtime {answer['ort_version']} (node {node}), "
                          f"intra-op threads {answer['threads']}, spinning {answer['spin']}, session created in "
                          f"{answer['session_create_ms'] / 1e3:.1f} s", flush=True)
            outs[engine] = np.fromfile(out, dtype=np.float32)
        for engine in ("pytorch-bf16", "pytorch-int8"):
            if engine in outs and "pytorch" in outs:
                a, b = outs["pytorch"].astype(np.float64), outs[engine].astype(np.float64)
                rows = a.reshape(CASES[case][1], -1), b.reshape(CASES[case][1], -1)
                cos = min(float((x @ y) / np.sqrt((x @ x) * (y @ y))) for x, y in zip(*rows))
                print(f"{case}: {engine} output vs PyTorch fp32: lowest cosine over the batch {cos:.5f}", flush=True)
        if "pytorch" in outs and "ort" in outs:
            a, b = outs["pytorch"], outs["ort"]
            diff = float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-30) if a.shape == b.shape else float("inf")
            print(f"{case}: ORT output vs PyTorch: max |difference| / max |value| = {diff:.1e}", flush=True)
            if not diff < 1e-3:
                sys.exit(f"{case}: ONNX Runtime does not compute what PyTorch does; the export is wrong")

    rounds = -(-args.runs // args.per_round)
    times = {e: {c: [] for c in args.cases} for e in ENGINES}
    peaks, loads, paths = [], [], {}
    engines = [e for e in ENGINES if e in args.engines]
    started = time.time()
    for r in range(rounds):
        k = min(args.per_round, args.runs - r * args.per_round)
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        loads.append(os.getloadavg()[0])
        for engine in order:
            if engine.startswith("ours"):
                got, peak, paths[engine] = run_ours(bench_clip, args.cases, k, args.threads, bf16=engine == "ours-bf16")
                peaks.append(peak)
                for c in args.cases:
                    times[engine][c].append(got[c])
            else:
                for c in args.cases:
                    if engine.startswith("pytorch"):
                        answer = workers["pytorch"].ask(dict(case=c, runs=k, warmup=0, mode=PYTORCH_MODES[engine]))
                    else:
                        answer = workers[engine].ask(onnx_request(work, onnx, c, k, 0))
                    times[engine][c].append(answer["times_ms"])
            time.sleep(args.gap)
        line = "  ".join(f"{e} " + "/".join(f"{times[e][c][-1][0]:.0f}" for c in args.cases) for e in order)
        print(f"round {r + 1}/{rounds} ({', '.join(args.cases)} ms): {line}", flush=True)
    for w in workers.values():
        w.close()

    print(f"\n{rounds} rounds in {time.time() - started:.0f} s; load average (1 min) at round starts "
          f"{min(loads):.2f}-{max(loads):.2f}, now {os.getloadavg()[0]:.2f}"
          + (f"; bench_clip's measured peaks: fp32 FMA {min(p[0] for p in peaks):.0f}-{max(p[0] for p in peaks):.0f}, "
             f"bf16 dot {min(p[1] for p in peaks):.0f}-{max(p[1] for p in peaks):.0f}, "
             f"AMX bf16 {min(p[2] for p in peaks):.0f}-{max(p[2] for p in peaks):.0f} GFLOP/s" if peaks else ""))
    for engine, path in paths.items():
        print(f"{engine}: {path}")
    peak_of = {}
    if peaks:
        peak_of = {"ours": max(p[0] for p in peaks), "ours-bf16": max(p[1] for p in peaks) or None}
        if "ours-bf16" in paths and "bf16" not in paths["ours-bf16"]:
            peak_of["ours-bf16"] = peak_of["ours"]
        elif "ours-bf16" in paths and "amx" in paths["ours-bf16"]:
            peak_of["ours-bf16"] = max(p[2] for p in peaks) or None
    summarize(times, args.cases, peak_of)

    memory = []
    if not args.no_memory:
        mib = 1024 * 1024
        print("\npeak resident memory of focuspatch-embed, one 224 px image, random ViT-B/16 (getrusage of the child)")
        for dtype, size, rss in measure_memory(build, work, args.threads):
            verdict = "within" if rss <= size + 200 * mib else "OVER"
            print(f"  {dtype}: file {size / mib:7.1f} MiB  peak RSS {rss / mib:7.1f} MiB  "
                  f"RSS - file {(rss - size) / mib:+7.1f} MiB  ({verdict} the target file + 200 MiB)")
            memory.append(dict(dtype=dtype, file_bytes=size, peak_rss_bytes=rss))

    if args.json_out:
        record = dict(threads=args.threads, cases=args.cases, times_ms=times, bench_clip_peak_gflops=peaks, paths=paths,
                      load_average=loads, memory=memory)
        Path(args.json_out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
