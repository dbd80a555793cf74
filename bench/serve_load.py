#!/usr/bin/python3
"""Bounded load test of focuspatch-serve on loopback: N concurrent clients x M requests each.

Starts the server (tiny random weights from focuspatch-convert, a synthetic dataset from
focuspatch-synth, the memory bank from focuspatch-detect), once with dynamic batching on and once
off, and for each concurrency sends every client's M requests (one image each, keep-alive
connection per client, HTTP/JSON or gRPC). Checks that every request is answered exactly once with
the score the server gives that image alone (nothing lost, duplicated or mixed up between
requests in a batch), then prints throughput, p50/p99 latency and the mean batch the server ran.
Stops by itself: the work is fixed, every call has a timeout.

usage: serve_load.py --build BUILD [--clients 1,2,4,8,16] [--requests 40] [--protocol http|grpc|both]
"""
import argparse
import base64
import concurrent.futures
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import requests

ap = argparse.ArgumentParser()
ap.add_argument("--build", required=True)
ap.add_argument("--vocab", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "clip", "bpe_simple_vocab_16e6.txt.gz"))
ap.add_argument("--clients", default="1,2,4,8,16")
ap.add_argument("--requests", type=int, default=40, help="requests per client")
ap.add_argument("--protocol", default="http", choices=["http", "grpc", "both"])
ap.add_argument("--preset", default="tiny")
ap.add_argument("--size", type=int, default=64, help="image side in pixels")
args = ap.parse_args()
tools = os.path.join(args.build, "tools")
tmp = tempfile.mkdtemp(prefix="focuspatch_serve_load_")


def tool(name, *a):
    r = subprocess.run([os.path.join(tools, name)] + list(a), capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stdout + r.stderr)


weights, bank = os.path.join(tmp, "w.fpw"), os.path.join(tmp, "bank.fpw")
tool("focuspatch-convert", "--random", args.preset, "--vocab", args.vocab, "-o", weights)
tool("focuspatch-synth", "--out", os.path.join(tmp, "data"), "--size", str(args.size), "--train", "2", "--test-good", "2",
     "--test-defect", "1", "--categories", "capsule,grain")
paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(tmp, "data")) if "/test/" in r + "/" for f in fs)
tool("focuspatch-detect", "--weights", weights, "--normal", os.path.join(tmp, "data/capsule/train/good"), "--normal",
     os.path.join(tmp, "data/grain/train/good"), "--image", paths[0], "--memory", bank, "--out", os.path.join(tmp, "ref"))
images = [open(p, "rb").read() for p in paths]
b64 = [base64.b64encode(b).decode() for b in images]

stubs = os.path.join(tmp, "stubs")
os.makedirs(stubs)
from grpc_tools import protoc  # noqa: E402
proto = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "serve")
protoc.main(["protoc", "-I" + proto, "--python_out=" + stubs, "--grpc_python_out=" + stubs, os.path.join(proto, "grpc_predict_v2.proto")])
sys.path.insert(0, stubs)
import grpc  # noqa: E402
pb = importlib.import_module("grpc_predict_v2_pb2")
pb_grpc = importlib.import_module("grpc_predict_v2_pb2_grpc")


def start(*extra):
    log = os.path.join(tmp, "serve_%d.log" % time.monotonic_ns())
    p = subprocess.Popen([os.path.join(tools, "focuspatch-serve"), "--weights", weights, "--memory", bank, "--http-port", "0",
                          "--grpc-port", "0", "--quiet", "--max-queue", "4096", *extra], stderr=open(log, "w"))
    for _ in range(2400):
        m = re.search(r"ready on http (\S+) grpc (\S+)", open(log).read())
        if m:
            return p, "http://" + m.group(1), m.group(2)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit("server did not start: " + open(log).read())


def http_client(url, client, n):
    s = requests.Session()
    out = []
    for i in range(n):
        k = (client * 7 + i) % len(images)
        body = {"id": "%d-%d" % (client, i),
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64[k]]}]}
        t0 = time.perf_counter()
        r = s.post(url + "/v2/models/focuspatch/infer", json=body, timeout=120)
        dt = time.perf_counter() - t0
        j = r.json() if r.status_code == 200 else {}
        out.append((body["id"], k, r.status_code, j.get("id"), j["outputs"][0]["data"][0] if j else None, dt))
    return out


def grpc_client(target, client, n):
    ch = grpc.insecure_channel(target)
    stub = pb_grpc.GRPCInferenceServiceStub(ch)
    out = []
    for i in range(n):
        k = (client * 7 + i) % len(images)
        req = pb.ModelInferRequest(model_name="focuspatch", id="%d-%d" % (client, i))
        req.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(images[k])
        t0 = time.perf_counter()
        try:
            g = stub.ModelInfer(req, timeout=120)
            status, rid, score = 200, g.id, g.outputs[0].contents.fp32_contents[0]
        except grpc.RpcError as e:
            status, rid, score = str(e.code()), None, None
        out.append((req.id, k, status, rid, score, time.perf_counter() - t0))
    ch.close()
    return out


def run(protocol, url, target, clients, n, expected):
    fn = http_client if protocol == "http" else grpc_client
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        rows = sum((f.result() for f in [pool.submit(fn, url if protocol == "http" else target, c, n) for c in range(clients)]), [])
    wall = time.perf_counter() - t0
    sent = {"%d-%d" % (c, i) for c in range(clients) for i in range(n)}
    answered = [r[3] for r in rows if r[2] == 200]
    ok = (len(answered) == len(sent) and set(answered) == sent and all(r[0] == r[3] for r in rows)
          and all(abs(r[4] - expected[r[1]]) <= 1e-6 * max(1.0, abs(expected[r[1]])) for r in rows))
    lat = sorted(r[5] for r in rows)
    return {"requests": len(rows), "ok": ok, "rps": len(rows) / wall, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def batch_mean(url):
    text = requests.get(url + "/metrics", timeout=10).text
    s = float(re.search(r"^focuspatch_batch_size_sum (\S+)", text, re.M).group(1))
    c = float(re.search(r"^focuspatch_batch_size_count (\S+)", text, re.M).group(1))
    return s, c


configs = [("batching on (--max-batch 8 --max-delay-ms 2)", ["--max-batch", "8", "--max-delay-ms", "2"]),
           ("batching off (--max-batch 1)", ["--max-batch", "1", "--max-delay-ms", "0"])]
protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
print("focuspatch-serve load test: preset %s, %dx%d px PNG, %d requests per client, one image each; client and server on one machine"
      % (args.preset, args.size, args.size, args.requests))
print("| server | protocol | clients | requests | all answered once, right score | images/s | p50 ms | p99 ms | mean batch |")
print("|---|---|---|---|---|---|---|---|---|")
all_ok = True
for name, extra in configs:
    proc, url, target = start(*extra)
    # Each image's score alone (the server's own answer, one request at a time).
    expected = [requests.post(url + "/v2/models/focuspatch/infer", json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                                               "data": [b]}]}, timeout=120).json()["outputs"][0]["data"][0]
                for b in b64]
    for protocol in protocols:
        for clients in [int(c) for c in args.clients.split(",")]:
            s0, c0 = batch_mean(url)
            r = run(protocol, url, target, clients, args.requests, expected)
            s1, c1 = batch_mean(url)
            all_ok &= r["ok"]
            print("| %s | %s | %d | %d | %s | %.1f | %.1f | %.1f | %.2f |" % (name, protocol, clients, r["requests"], "yes" if r["ok"] else "NO",
                                                                        r["rps"], r["p50_ms"], r["p99_ms"], (s1 - s0) / max(1, c1 - c0)))
            sys.stdout.flush()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
sys.exit(0 if all_ok else 1)
