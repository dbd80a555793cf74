// Times an ONNX model's forward in ONNX Runtime (CPU execution provider) from Node.js, for
// bench/compare.py. onnxruntime-node carries the Linux x64 CPU runtime in its npm tarball, so this
// needs no Python package and no build:
//   npm install --ignore-scripts --prefix bench/.node onnxruntime-node      (bench/.node is git-ignored)
//
// One-shot:
//   node bench/ort_time.mjs --model M.onnx --input NAME=DTYPE:D0xD1x...:FILE [--input ...]
//        [--threads 2] [--runs 7] [--warmup 2] [--output-file OUT.bin] [--spin 0|1]
// prints one JSON object: session creation time, every timed run in ms, median and best.
// Inputs are raw little-endian files (float32 or int64) of exactly the shape given.
//
// --serve: keeps sessions open and answers one JSON request per stdin line with one JSON line,
// {"model", "inputs": [{"name", "dtype", "shape", "file"}], "runs", "warmup", "output_file"}, so
// that compare.py can interleave single runs with the other implementations without reloading.
//
// Session options: intraOpNumThreads = --threads (the calling thread is one of them),
// interOpNumThreads 1, sequential execution, graph optimization level "all". ORT's intra-op
// threads spin while waiting by default (--spin 1, what a user gets); --spin 0 turns that off, as
// OMP_WAIT_POLICY=PASSIVE does for PyTorch.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));

function loadOrt() {
  // bench/.node first (where the README installs it), then ORT_NODE_DIR, then Node's own search.
  const places = [process.env.ORT_NODE_DIR, join(here, '.node')].filter(Boolean);
  for (const place of places) {
    try {
      return createRequire(join(place, 'node_modules', 'x.js'))('onnxruntime-node');
    } catch (e) {
      if (e.code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  try {
    return createRequire(import.meta.url)('onnxruntime-node');
  } catch (e) {
    throw new Error(`onnxruntime-node not found in ${places.join(', ')} nor on Node's path: ` +
                    'npm install --ignore-scripts --prefix bench/.node onnxruntime-node');
  }
}

const ort = loadOrt();

function fail(message) {
  throw new Error(message);
}

const typedArrays = { float32: [Float32Array, 4], int64: [BigInt64Array, 8], int32: [Int32Array, 4] };

function readTensor({ name, dtype, shape, file }) {
  const kind = typedArrays[dtype] ?? fail(`input ${name}: dtype '${dtype}' is not one of ${Object.keys(typedArrays)}`);
  const [Type, bytes] = kind;
  const count = shape.reduce((a, b) => a * b, 1);
  const buffer = readFileSync(file);
  if (buffer.length !== count * bytes)
    fail(`${file}: ${buffer.length} bytes, but input ${name} ${dtype} [${shape}] needs ${count * bytes}`);
  const copy = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length);  // aligned
  return new ort.Tensor(dtype, new Type(copy), shape);
}

function parseInput(spec) {  // NAME=DTYPE:D0xD1:FILE
  const m = /^([^=]+)=([a-z0-9]+):([0-9x]+):(.+)$/.exec(spec);
  if (!m) fail(`--input '${spec}': expected NAME=DTYPE:D0xD1x...:FILE`);
  return { name: m[1], dtype: m[2], shape: m[3].split('x').map(Number), file: m[4] };
}

const sessions = new Map();

async function session(model, threads, spin) {
  const key = `${model}|${threads}|${spin}`;
  if (!sessions.has(key)) {
    const options = {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    };
    if (spin !== undefined) options.extra = { session: { intra_op: { allow_spinning: String(spin) } } };
    const start = process.hrtime.bigint();
    const s = await ort.InferenceSession.create(model, options);
    sessions.set(key, { session: s, createMs: Number(process.hrtime.bigint() - start) / 1e6 });
  }
  return sessions.get(key);
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function time(request) {
  const threads = request.threads ?? 2;
  const { session: s, createMs } = await session(request.model, threads, request.spin);
  const feeds = {};
  for (const input of request.inputs) feeds[input.name] = readTensor(input);
  let outputs;
  for (let i = 0; i < (request.warmup ?? 0); ++i) outputs = await s.run(feeds);
  const times = [];
  for (let i = 0; i < (request.runs ?? 1); ++i) {
    const start = process.hrtime.bigint();
    outputs = await s.run(feeds);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const first = outputs[s.outputNames[0]];
  if (request.output_file) {
    const data = first.data;
    writeFileSync(request.output_file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }
  return {
    model: request.model, ort_version: ort.env.versions?.node ?? '?', threads, spin: request.spin ?? 'default',
    session_create_ms: createMs, output: { name: s.outputNames[0], dims: first.dims, type: first.type },
    times_ms: times, median_ms: times.length ? median(times) : null, best_ms: times.length ? Math.min(...times) : null,
  };
}

function parseArgs(argv) {
  const args = { inputs: [] };
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${flag} needs a value`));
    if (flag === '--serve') args.serve = true;
    else if (flag === '--model') args.model = value();
    else if (flag === '--input') args.inputs.push(parseInput(value()));
    else if (flag === '--threads') args.threads = Number(value());
    else if (flag === '--runs') args.runs = Number(value());
    else if (flag === '--warmup') args.warmup = Number(value());
    else if (flag === '--output-file') args.output_file = value();
    else if (flag === '--spin') args.spin = Number(value());
    else fail(`unknown argument '${flag}' (see the comment at the top of ${fileURLToPath(import.meta.url)})`);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!args.serve) {
    if (!args.model || args.inputs.length === 0) fail('give --model FILE.onnx and at least one --input, or --serve');
    console.log(JSON.stringify(await time({ warmup: 2, runs: 7, ...args })));
    return;
  }
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let answer;
    try {
      answer = await time({ threads: args.threads, spin: args.spin, ...JSON.parse(line) });
    } catch (e) {
      answer = { error: String(e.message ?? e) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
}

main().catch((e) => {
  console.error(`ort_time: ${e.message ?? e}`);
  process.exit(1);
});
