#!/usr/bin/python3
"""focuspatch-serve driven by real clients on loopback: curl, Python requests and grpcio.

Checks every endpoint of both protocols; that scores, categories, top keywords, anomaly maps and
the calibrated decisions (verdict, normalized score, anomalous, regions, mask) equal
focuspatch-detect's on the same images and memory bank over JSON, the binary extension and gRPC,
and that an uncalibrated bank answers the documented encoding; hostile clients (malformed bodies,
wrong types and shapes, oversized bodies and images, compressed bodies, slow and vanishing
clients) each get a protocol error while others are served; the bounded queue, deadlines and
dynamic batching; memory bank reload under load loses no request; SIGTERM under load answers the
requests in flight.

usage: test_serve.py TOOLS_DIR VOCAB PROTO
Exits 77 (CTest: skipped) naming what is missing when a client or the server is not available.
"""
import atexit
import base64
import concurrent.futures
import importlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

SKIP = 77


def skip(why):
    print("skipped: " + why)
    sys.exit(SKIP)


if len(sys.argv) != 4:
    sys.exit(__doc__)
TOOLS, VOCAB, PROTO = sys.argv[1:]
for name in ("requests", "grpc", "grpc_tools", "numpy", "PIL"):
    try:
        importlib.import_module(name)
    except ImportError:
        skip("the Python module '%s' is missing (Debian: python3-requests, python3-grpcio, python3-grpc-tools, python3-numpy, python3-pil)" % name)
if not shutil.which("curl"):
    skip("curl is missing")
if not os.path.exists(os.path.join(TOOLS, "focuspatch-serve")):
    skip("focuspatch-serve was not built (cpp-httplib or gRPC missing at configure time)")
for program in ("focuspatch-convert", "focuspatch-synth", "focuspatch-detect"):
    if not os.path.exists(os.path.join(TOOLS, program)):
        skip(program + " was not built (the test makes its weights, images and bank with it)")
if not os.path.exists(VOCAB):
    skip(VOCAB + " is absent")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from grpc_tools import protoc  # noqa: E402
from PIL import Image  # noqa: E402

failures = []


def check(condition, what):
    if condition:
        print("ok   " + what)
    else:
        print("FAIL " + what)
        failures.append(what)
    return condition


def tool(name, *args):
    r = subprocess.run([os.path.join(TOOLS, name)] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s failed:\n%s%s" % (name, r.stdout, r.stderr))
    return r.stdout


TMP = tempfile.mkdtemp(prefix="focuspatch_serve_")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)


def path(*parts):
    return os.path.join(TMP, *parts)


# ---- data, weights, banks and the reference results, all from the project's programs ---------
weights = path("tiny.fpw")
tool("focuspatch-convert", "--random", "tiny", "--vocab", VOCAB, "-o", weights)
tool("focuspatch-synth", "--out", path("data"), "--size", "48", "--train", "4", "--test-good", "1", "--test-defect", "1",
     "--categories", "capsule,grain")
images = [path("data", c, "test", d, "000.png") for c in ("capsule", "grain") for d in ("good", "hole", "stain")]
bank = path("bank.fpw")  # the file the server serves; replaced during the reload tests
bank_both = path("bank_both.fpw")
bank_capsule = path("bank_capsule.fpw")
bank_uncalibrated = path("bank_uncalibrated.fpw")  # one shot, no held-out images: nothing to calibrate on
# The served bank: shots 000-001 of each category, calibrated on the held-out normal shots 002-003.
# The false-alarm rates are extreme on purpose: with the tiny random model, the usual 1 % / 0.1 %
# call every test image normal with an empty mask, and equal all-zero answers would prove little.
# At 0.67 / 0.05 the capsule images are anomalous, the grain ones normal, and masks have regions.
train = lambda c, i: path("data", c, "train", "good", "%03d.png" % i)
normals = sum((["--normal", "%s=%s" % (c, train(c, i))] for c in ("capsule", "grain") for i in (0, 1)), [])
held_out = sum((["--calibration", "%s=%s" % (c, train(c, i))] for c in ("capsule", "grain") for i in (2, 3)), [])
image_args = sum((["--image", p] for p in images), [])
tool("focuspatch-detect", "--weights", weights, *normals, *held_out, "--false-alarm-rate", "0.67", "--pixel-false-alarm-rate", "0.05",
     *image_args, "--memory", bank_both, "--out", path("ref"))
tool("focuspatch-detect", "--weights", weights, "--normal", path("data", "capsule", "train", "good"), "--image", images[0],
     "--memory", bank_capsule, "--out", path("ref_capsule"))
tool("focuspatch-detect", "--weights", weights, "--normal", "capsule=" + path("data", "capsule", "train", "good", "000.png"),
     "--image", images[0], "--memory", bank_uncalibrated, "--out", path("ref_uncalibrated"))
shutil.copy(bank_both, bank)
ref_results = json.load(open(path("ref", "results.json")))
reference = ref_results["images"]
calibration = ref_results["calibration"]
if not all(calibration[c]["method"] == "held-out normal images" for c in ("capsule", "grain")) or not all(x["mask"] for x in reference):
    sys.exit("focuspatch-detect did not calibrate the bank on the held-out images:\n" + json.dumps(calibration, indent=1))
ref_verdicts = [x["verdict"] for x in reference]
ref_normalized = [x["normalized_score"] for x in reference]
ref_regions = [x["regions"] for x in reference]
# detect's mask PNGs, 255 = above the pixel threshold, read by PIL; the server's mask is 1 there.
ref_masks = np.stack([(np.asarray(Image.open(x["mask"]).convert("L")) == 255).astype(np.uint8) for x in reference])
check({"anomalous", "normal"} <= set(ref_verdicts) and ref_masks.any() and any(ref_regions),
      "the reference has both verdicts, mask pixels and regions (so the comparisons below are not of empty answers)")
reference_uncalibrated = json.load(open(path("ref_uncalibrated", "results.json")))["images"][0]
files = [open(p, "rb").read() for p in images]

# gRPC stubs from our .proto, built here with grpc_tools (python3-grpc-tools).
stubs = path("stubs")
os.makedirs(stubs)
proto_dir = os.path.dirname(os.path.abspath(PROTO))
if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + stubs, "--grpc_python_out=" + stubs, os.path.abspath(PROTO)]) != 0:
    sys.exit("grpc_tools.protoc could not compile " + PROTO)
sys.path.insert(0, stubs)
pb = importlib.import_module("grpc_predict_v2_pb2")
pb_grpc = importlib.import_module("grpc_predict_v2_pb2_grpc")


class Server:
    """focuspatch-serve on loopback, ports chosen by the server (port 0), read from its log."""

    def __init__(self, *extra):
        self.log_path = path("serve_%d.log" % time.monotonic_ns())
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([os.path.join(TOOLS, "focuspatch-serve"), "--weights", weights, "--memory", bank, "--http-port", "0",
                                      "--grpc-port", "0", *extra], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = re.search(r"ready on http 127\.0\.0\.1:(\d+) grpc 127\.0\.0\.1:(\d+)", open(self.log_path).read())
            if m:
                self.http = "http://127.0.0.1:%s" % m.group(1)
                self.http_port = int(m.group(1))
                self.grpc_target = "127.0.0.1:%s" % m.group(2)
                self.channel = grpc.insecure_channel(self.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)])
                self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        sys.exit("focuspatch-serve did not start:\n" + open(self.log_path).read())

    def rss_kib(self):
        for line in open("/proc/%d/status" % self.proc.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def text_log(self):
        return open(self.log_path).read()


def json_request(blobs, **extra):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(blobs)],
                        "data": [base64.b64encode(b).decode() for b in blobs]}]}
    body.update(extra)
    return body


def infer(server, blobs, timeout=60, **extra):
    return requests.post(server.http + "/v2/models/focuspatch/infer", json=json_request(blobs, **extra), timeout=timeout)


def outputs_of(reply):
    return {o["name"]: o for o in reply["outputs"]}


def grpc_request(blobs, raw=False, **parameters):
    req = pb.ModelInferRequest(model_name="focuspatch", id="g1")
    tensor = req.inputs.add(name="image", datatype="BYTES", shape=[len(blobs)])
    if raw:
        req.raw_input_contents.append(b"".join(struct.pack("<I", len(b)) + b for b in blobs))
    else:
        tensor.contents.bytes_contents.extend(blobs)
    for k, v in parameters.items():
        if isinstance(v, bool):
            req.parameters[k].bool_param = v
        else:
            req.parameters[k].int64_param = v
    return req


def grpc_code(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


DEFAULT_OUTPUTS = ["score", "normalized_score", "anomalous", "verdict", "category", "top_keyword", "regions"]
ALL_OUTPUTS = DEFAULT_OUTPUTS + ["anomaly_map", "mask"]


def binary_outputs(r):
    """The outputs of a binary-extension reply: {name: (metadata, raw bytes)}."""
    n = int(r.headers["Inference-Header-Content-Length"])
    head, rest = json.loads(r.content[:n]), r.content[n:]
    at, got = 0, {}
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        got[o["name"]] = (o, rest[at:at + size])
        at += size
    return got


def split_bytes(raw):
    """BYTES elements from their raw form: 4-byte little-endian length, then the bytes."""
    out, i = [], 0
    while i < len(raw):
        (k,) = struct.unpack_from("<I", raw, i)
        out.append(raw[i + 4:i + 4 + k].decode())
        i += 4 + k
    return out


def check_decisions(what, verdicts, normalized, anomalous, regions, mask):
    """The decisions of the reference images, as the server answered them, equal detect's."""
    check(verdicts == ref_verdicts, what + ": verdicts equal focuspatch-detect's %s" % ref_verdicts)
    check(normalized == ref_normalized, what + ": normalized scores equal focuspatch-detect's exactly")
    check(anomalous == [v == "anomalous" for v in ref_verdicts], what + ": anomalous is verdict == 'anomalous'")
    check([json.loads(t) for t in regions] == ref_regions, what + ": regions (JSON text) equal results.json's")
    check(mask.shape == ref_masks.shape and np.array_equal(mask, ref_masks),
          what + ": masks [N, H, W] equal focuspatch-detect's _mask.png (%d pixels on)" % int(ref_masks.sum()))


def metric(server, name):
    text = requests.get(server.http + "/metrics", timeout=10).text
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


main = Server("--max-body-bytes", str(1 << 20), "--max-image-pixels", "10000", "--read-timeout-s", "1", "--http-threads", "16")
try:
    # ---- HTTP endpoints ------------------------------------------------------------------------
    h = main.http
    r = requests.get(h + "/v2/health/live", timeout=10)
    check(r.status_code == 200 and r.json() == {"live": True}, "GET /v2/health/live")
    r = requests.get(h + "/v2/health/ready", timeout=10)
    check(r.status_code == 200 and r.json() == {"ready": True}, "GET /v2/health/ready")
    r = requests.get(h + "/v2", timeout=10).json()
    check(r["name"] == "focuspatch-serve" and "binary_tensor_data" in r["extensions"], "GET /v2 server metadata")
    for url in ("/v2/models/focuspatch", "/v2/models/focuspatch/versions/1"):
        meta = requests.get(h + url, timeout=10).json()
        check(meta["name"] == "focuspatch" and meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
              and [o["name"] for o in meta["outputs"]] == ALL_OUTPUTS
              and [o["datatype"] for o in meta["outputs"]] == ["FP32", "FP32", "BOOL", "BYTES", "BYTES", "BYTES", "BYTES", "FP32", "UINT8"]
              and "not served" not in meta["description"] and "uncalibrated" in meta["description"], "GET " + url + " model metadata")
    check(requests.get(h + "/v2/models/focuspatch/ready", timeout=10).status_code == 200, "GET /v2/models/focuspatch/ready")
    check(requests.get(h + "/v2/models/focuspatch/versions/1/ready", timeout=10).status_code == 200, "GET .../versions/1/ready")
    check(requests.get(h + "/v2/models/other/ready", timeout=10).status_code == 404, "an unknown model is 404")
    check(requests.get(h + "/v2/models/focuspatch/versions/7", timeout=10).status_code == 404, "an unknown version is 404")
    check(requests.get(h + "/nothing", timeout=10).status_code == 404, "an unknown path is 404")

    # ---- results equal focuspatch-detect's -----------------------------------------------------
    r = infer(main, files, id="batch-1", parameters={"anomaly_map": True, "mask": True})
    check(r.status_code == 200, "POST infer with %d images in one request (one batch)" % len(files))
    reply = r.json()
    out = outputs_of(reply)
    check(reply["id"] == "batch-1" and reply["model_name"] == "focuspatch", "the reply carries the request's id and the model")
    check(out["score"]["datatype"] == "FP32" and out["score"]["shape"] == [len(files)], "score is FP32 [N]")
    check(out["score"]["data"] == [x["score"] for x in reference], "scores equal focuspatch-detect's exactly")
    check(out["category"]["data"] == [x["category"] for x in reference], "categories equal focuspatch-detect's")
    check(out["top_keyword"]["data"] == [x["top_keywords"][0]["keyword"] for x in reference], "top keywords equal focuspatch-detect's")
    maps = np.array(out["anomaly_map"]["data"], dtype=np.float32).reshape(out["anomaly_map"]["shape"])
    ref_maps = np.stack([np.load(x["map"]) for x in reference])
    check(out["anomaly_map"]["shape"] == [len(files), 48, 48], "anomaly_map is FP32 [N, H, W] at the images' size")
    check(np.array_equal(maps, ref_maps), "anomaly maps equal focuspatch-detect's .npy maps exactly (max diff %g)"
          % float(np.abs(maps - ref_maps).max()))
    check([o["name"] for o in reply["outputs"]] == ALL_OUTPUTS, "outputs come in the metadata's order")
    check([out[k]["datatype"] for k in ("normalized_score", "anomalous", "verdict", "regions", "mask")]
          == ["FP32", "BOOL", "BYTES", "BYTES", "UINT8"] and out["mask"]["shape"] == [len(files), 48, 48], "decision datatypes and shapes")
    check_decisions("JSON", out["verdict"]["data"], out["normalized_score"]["data"], out["anomalous"]["data"], out["regions"]["data"],
                    np.array(out["mask"]["data"], dtype=np.uint8).reshape(out["mask"]["shape"]))
    check(all(isinstance(b, bool) for b in out["anomalous"]["data"]), "JSON: anomalous is true/false")
    r = infer(main, files[:1])
    check(r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == DEFAULT_OUTPUTS,
          "default outputs: the decisions, no anomaly_map or mask unasked")
    r = infer(main, files[:2], outputs=[{"name": "mask"}])
    check(r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["mask"]
          and r.json()["outputs"][0]["data"] == ref_masks[:2].ravel().tolist(), "the mask output named, without the parameter")
    r = requests.post(h + "/v2/models/focuspatch/infer", timeout=60, json={"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2, 1], "data": [[base64.b64encode(b).decode()] for b in files[:2]]}]})
    check(r.status_code == 200 and outputs_of(r.json())["score"]["data"] == [x["score"] for x in reference[:2]],
          "shape [N, 1] with nested JSON data, as Triton's clients send it")
    r = infer(main, files[:1], outputs=[{"name": "category"}])
    check(r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["category"], "named outputs only")

    # curl, the plainest client: base64 JSON from a file.
    with open(path("req.json"), "w") as f:
        json.dump(json_request(files[3:4]), f)
    c = subprocess.run(["curl", "-s", "-f", "-H", "Content-Type: application/json", "--data-binary", "@" + path("req.json"),
                        h + "/v2/models/focuspatch/infer"], capture_output=True, text=True)
    check(c.returncode == 0 and outputs_of(json.loads(c.stdout))["score"]["data"] == [reference[3]["score"]], "curl infer")
    c = subprocess.run(["curl", "-s", "-f", h + "/metrics"], capture_output=True, text=True)
    check(c.returncode == 0 and "focuspatch_batch_size_bucket" in c.stdout, "curl /metrics")

    # Triton's binary-data extension: raw image bytes in, raw outputs back.
    blob = b"".join(struct.pack("<I", len(b)) + b for b in files)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "parameters": {"binary_data_output": True, "mask": True}}).encode()
    r = requests.post(h + "/v2/models/focuspatch/infer", data=header + blob,
                      headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
                      timeout=60)
    ok = r.status_code == 200 and "Inference-Header-Content-Length" in r.headers
    if check(ok, "binary-data extension: raw inputs, raw outputs"):
        got = binary_outputs(r)
        scores = np.frombuffer(got["score"][1], dtype="<f4")
        check(scores.tolist() == [x["score"] for x in reference], "binary scores equal focuspatch-detect's")
        check(split_bytes(got["category"][1]) == [x["category"] for x in reference], "binary BYTES categories (length-prefixed)")
        check(len(got["anomalous"][1]) == len(files) and len(got["mask"][1]) == ref_masks.size, "binary BOOL and UINT8: one byte each")
        check_decisions("binary", split_bytes(got["verdict"][1]), np.frombuffer(got["normalized_score"][1], dtype="<f4").tolist(),
                        [b != 0 for b in got["anomalous"][1]], split_bytes(got["regions"][1]),
                        np.frombuffer(got["mask"][1], dtype=np.uint8).reshape(got["mask"][0]["shape"]))

    # ---- gRPC endpoints ------------------------------------------------------------------------
    s = main.stub
    check(s.ServerLive(pb.ServerLiveRequest()).live, "gRPC ServerLive")
    check(s.ServerReady(pb.ServerReadyRequest()).ready, "gRPC ServerReady")
    check(s.ModelReady(pb.ModelReadyRequest(name="focuspatch")).ready, "gRPC ModelReady")
    md = s.ServerMetadata(pb.ServerMetadataRequest())
    check(md.name == "focuspatch-serve" and "model_repository" in md.extensions, "gRPC ServerMetadata")
    mm = s.ModelMetadata(pb.ModelMetadataRequest(name="focuspatch", version="1"))
    check(mm.inputs[0].name == "image" and mm.inputs[0].datatype == "BYTES" and list(mm.inputs[0].shape) == [-1]
          and [o.name for o in mm.outputs] == ALL_OUTPUTS, "gRPC ModelMetadata")
    check(grpc_code(lambda: s.ModelMetadata(pb.ModelMetadataRequest(name="other"))) == grpc.StatusCode.NOT_FOUND,
          "gRPC unknown model is NOT_FOUND")
    g = s.ModelInfer(grpc_request(files, anomaly_map=True, mask=True))
    go = {o.name: o for o in g.outputs}
    check(g.id == "g1" and list(go["score"].contents.fp32_contents) == [x["score"] for x in reference],
          "gRPC ModelInfer (typed contents): scores equal focuspatch-detect's")
    check([b.decode() for b in go["category"].contents.bytes_contents] == [x["category"] for x in reference], "gRPC categories")
    check(np.array_equal(np.array(go["anomaly_map"].contents.fp32_contents, dtype=np.float32).reshape(ref_maps.shape), ref_maps),
          "gRPC anomaly maps equal focuspatch-detect's")
    check([o.name for o in g.outputs] == ALL_OUTPUTS and go["anomalous"].datatype == "BOOL" and list(go["mask"].shape) == [len(files), 48, 48],
          "gRPC outputs, datatypes and shapes")
    check_decisions("gRPC typed", [b.decode() for b in go["verdict"].contents.bytes_contents], list(go["normalized_score"].contents.fp32_contents),
                    list(go["anomalous"].contents.bool_contents), [b.decode() for b in go["regions"].contents.bytes_contents],
                    np.array(go["mask"].contents.uint_contents, dtype=np.uint8).reshape(list(go["mask"].shape)))
    g = s.ModelInfer(grpc_request(files, raw=True, mask=True))
    names = [o.name for o in g.outputs]
    raw = dict(zip(names, g.raw_output_contents))
    raw_scores = np.frombuffer(raw["score"], dtype="<f4")
    check(raw_scores.tolist() == [x["score"] for x in reference], "gRPC ModelInfer (raw contents, as Triton's client): same scores")
    check_decisions("gRPC raw", split_bytes(raw["verdict"]), np.frombuffer(raw["normalized_score"], dtype="<f4").tolist(),
                    [b != 0 for b in raw["anomalous"]], split_bytes(raw["regions"]),
                    np.frombuffer(raw["mask"], dtype=np.uint8).reshape(ref_masks.shape))

    # ---- hostile HTTP clients ------------------------------------------------------------------
    rss_before = main.rss_kib()
    url = h + "/v2/models/focuspatch/infer"
    img_b64 = base64.b64encode(files[0]).decode()

    def post(body, headers=None, raw=False):
        data = body if raw else json.dumps(body)
        return requests.post(url, data=data, headers=headers or {"Content-Type": "application/json"}, timeout=30)

    big = np.zeros((200, 200, 3), np.uint8)  # 40000 pixels, over --max-image-pixels 10000
    def png(a):
        h_, w_ = a.shape[:2]
        rows = b"".join(b"\x00" + a[y].tobytes() for y in range(h_))
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w_, h_, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    hostile = [
        ("malformed JSON", lambda: post(b'{"inputs": [', raw=True), 400, "invalid JSON"),
        ("JSON that is not an object", lambda: post([1, 2]), 400, "JSON object"),
        ("no inputs", lambda: post({"id": "x"}), 400, "inputs"),
        ("inputs not an array", lambda: post({"inputs": {"name": "image"}}), 400, "inputs"),
        ("wrong datatype", lambda: post({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}), 400, "BYTES"),
        ("shape disagrees with data", lambda: post({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": [img_b64]}]}),
         400, "shape"),
        ("shape of rank 3", lambda: post({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1, 1], "data": [img_b64]}]}),
         400, "shape"),
        ("negative dimension", lambda: post({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "data": [img_b64]}]}),
         400, "shape"),
        ("numbers as BYTES", lambda: post({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [7]}]}), 400, "strings"),
        ("unknown input", lambda: post({"inputs": [{"name": "picture", "datatype": "BYTES", "shape": [1], "data": [img_b64]}]}),
         400, "unknown input"),
        ("unknown output", lambda: post(json_request(files[:1], outputs=[{"name": "heatmap"}])), 400, "unknown output"),
        ("mask parameter not a boolean", lambda: post(json_request(files[:1], parameters={"mask": 1})), 400, "boolean"),
        ("not base64", lambda: post({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}), 400, "base64"),
        ("not an image", lambda: post(json_request([b"hello, not a picture"])), 400, "image 0"),
        ("image over the pixel limit", lambda: post(json_request([png(big)])), 400, "limit"),
        ("body over --max-body-bytes", lambda: post(b"x" * (2 << 20), raw=True), 413, "larger"),
        ("too many JSON values", lambda: post(b"[" + b"0," * 500000 + b"0]", raw=True), 413, "values"),
        ("deeply nested JSON", lambda: post(b"[" * 5000 + b"]" * 5000, raw=True), 400, "deep"),
        ("gzip-compressed body", lambda: post(zlib.compress(b"{}" * 1000), {"Content-Encoding": "gzip"}, raw=True), 415, "compressed"),
        ("binary header past the body", lambda: post(b"{}", {"Inference-Header-Content-Length": "999"}, raw=True), 400, "body has only"),
        ("binary header not a number", lambda: post(b"{}", {"Inference-Header-Content-Length": "ten"}, raw=True), 400, "byte count"),
        ("binary size past the body", lambda: post(json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                                          "parameters": {"binary_data_size": 100}}]}).encode() + b"abc",
                                                   {"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 100}}]})))},
                                                   raw=True), 400, "past the body"),
        ("timeout parameter not an integer", lambda: post(json_request(files[:1], parameters={"timeout": "soon"})), 400, "timeout"),
        ("mixed sizes with mask", lambda: post(json_request([files[0], png(np.zeros((40, 40, 3), np.uint8))], parameters={"mask": True})),
         400, "one size"),
        ("mixed sizes with anomaly_map", lambda: post(json_request([files[0], open(path("data", "capsule", "train", "good", "000.png"), "rb").read(), png(np.zeros((40, 40, 3), np.uint8))], parameters={"anomaly_map": True})), 400, "one size"),
        ("a newline in the id", lambda: post(json_request([b"x"], id="a\nforged log line")), 400, "image 0"),
        ("wrong model", lambda: requests.post(h + "/v2/models/other/infer", json=json_request(files[:1]), timeout=30), 404, "no model"),
    ]
    for what, send, status, words in hostile:
        r = send()
        message = r.json().get("error", "") if r.headers.get("Content-Type", "").startswith("application/json") else ""
        check(r.status_code == status and words in message, "hostile: %s -> %d (%s)" % (what, r.status_code, message[:90]))
    check(infer(main, files[:1]).status_code == 200, "still serving after the hostile requests")

    # Slow client: half a request line, then silence; another client is served meanwhile, and the
    # server drops the silent one after --read-timeout-s.
    slow = socket.create_connection(("127.0.0.1", main.http_port))
    slow.sendall(b"POST /v2/models/focuspatch/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    t0 = time.monotonic()
    check(infer(main, files[:1]).status_code == 200 and time.monotonic() - t0 < 5, "a slow client does not hold up another")
    slow.settimeout(15)
    try:
        data = slow.recv(4096)
        dropped = True
    except (socket.timeout, ConnectionResetError):
        data, dropped = b"", False
    check(dropped and time.monotonic() - t0 < 12, "the slow client is disconnected after the read timeout (%r)" % data[:40])
    slow.close()
    # Slow loris on every thread of the pool would starve the server: each holds a thread only
    # until the read timeout.
    lorises = [socket.create_connection(("127.0.0.1", main.http_port)) for _ in range(40)]
    for s_ in lorises:
        s_.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    t0 = time.monotonic()
    r = requests.get(h + "/v2/health/live", timeout=30)
    check(r.status_code == 200, "40 stalled connections (more than --http-threads 16) delay a live check by %.1f s, not forever"
          % (time.monotonic() - t0))
    for s_ in lorises:
        s_.close()
    # Vanishing clients: a whole request sent, the connection closed before the answer.
    body = json.dumps(json_request(files[:2])).encode()
    for _ in range(20):
        v = socket.create_connection(("127.0.0.1", main.http_port))
        v.sendall(b"POST /v2/models/focuspatch/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        v.close()
    time.sleep(1)
    check(infer(main, files[:1]).status_code == 200, "20 vanished clients later the server still answers")
    for _ in range(3):  # the hostile round again: memory must not grow with it
        for what, send, status, words in hostile:
            send()
    rss_after = main.rss_kib()
    check(rss_after - rss_before < 64 * 1024, "resident memory %d -> %d KiB over 4 rounds of hostile requests (no leak)"
          % (rss_before, rss_after))

    # ---- hostile gRPC clients ------------------------------------------------------------------
    garbage = main.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    code = grpc_code(lambda: garbage(b"\xff\xff\xff\xff not a protobuf", timeout=10))
    check(code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), "gRPC malformed protobuf -> %s" % code)
    bad = pb.ModelInferRequest(model_name="focuspatch")
    bad.inputs.add(name="image", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    check(grpc_code(lambda: s.ModelInfer(bad)) == grpc.StatusCode.INVALID_ARGUMENT, "gRPC wrong datatype -> INVALID_ARGUMENT")
    bad = grpc_request(files[:1])
    bad.inputs[0].shape[:] = [2]
    check(grpc_code(lambda: s.ModelInfer(bad)) == grpc.StatusCode.INVALID_ARGUMENT, "gRPC wrong shape -> INVALID_ARGUMENT")
    bad = grpc_request(files[:1], raw=True)
    bad.raw_input_contents[0] = b"\xff\xff\x00\x00abc"
    check(grpc_code(lambda: s.ModelInfer(bad)) == grpc.StatusCode.INVALID_ARGUMENT, "gRPC truncated raw BYTES -> INVALID_ARGUMENT")
    check(grpc_code(lambda: s.ModelInfer(grpc_request([b"x" * (2 << 20)]))) == grpc.StatusCode.RESOURCE_EXHAUSTED,
          "gRPC message over --max-body-bytes -> RESOURCE_EXHAUSTED")
    check(grpc_code(lambda: s.ModelInfer(grpc_request([png(big)]))) == grpc.StatusCode.INVALID_ARGUMENT,
          "gRPC image over the pixel limit -> INVALID_ARGUMENT")
    check(s.ServerLive(pb.ServerLiveRequest()).live, "gRPC still live after the hostile calls")

    # ---- memory bank reload under load loses no request ----------------------------------------
    grain = files[3]  # a grain image: 'grain' with both categories, 'capsule' with the capsule-only bank
    results, stop_load = [], threading.Event()

    def load(kind):
        while not stop_load.is_set():
            try:
                if kind == "http":
                    r = infer(main, [grain], timeout=30)
                    results.append((r.status_code, outputs_of(r.json())["category"]["data"][0] if r.status_code == 200 else r.text))
                else:
                    g = main.stub.ModelInfer(grpc_request([grain]), timeout=30)
                    category = {o.name: o for o in g.outputs}["category"]
                    results.append((200, category.contents.bytes_contents[0].decode()))
            except Exception as e:  # a lost request
                results.append((0, repr(e)))

    workers = [threading.Thread(target=load, args=(k,)) for k in ("http", "http", "grpc", "grpc")]
    for w in workers:
        w.start()
    time.sleep(0.5)
    shutil.copy(bank_capsule, bank + ".new")
    os.replace(bank + ".new", bank)
    main.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    shutil.copy(bank_both, bank + ".new")
    os.replace(bank + ".new", bank)
    r = requests.post(h + "/v2/repository/models/focuspatch/load", timeout=60)
    check(r.status_code == 200, "HTTP repository load call reloads the bank")
    time.sleep(0.7)
    shutil.copy(bank_capsule, bank + ".new")
    os.replace(bank + ".new", bank)
    s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="focuspatch"))
    time.sleep(0.7)
    with open(bank + ".new", "wb") as f:
        f.write(b"not a memory bank")
    os.replace(bank + ".new", bank)
    r = requests.post(h + "/v2/repository/models/focuspatch/load", timeout=60)
    check(r.status_code == 400 and "previous memory bank keeps serving" in r.json()["error"], "a broken bank is refused, the old one serves")
    check(grpc_code(lambda: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="focuspatch"))) ==
          grpc.StatusCode.FAILED_PRECONDITION, "gRPC load of a broken bank -> FAILED_PRECONDITION")
    time.sleep(0.5)
    stop_load.set()
    for w in workers:
        w.join()
    shutil.copy(bank_both, bank)
    lost = [x for x in results if x[0] != 200]
    cats = [x[1] for x in results if x[0] == 200]
    check(not lost and len(results) > 20, "reload under load: %d requests, none lost %s" % (len(results), lost[:3]))
    check("grain" in cats and "capsule" in cats and cats[-1] == "capsule",
          "the reloads took effect (%d answers 'grain', %d 'capsule'; the last bank, capsule-only, still serves)"
          % (cats.count("grain"), cats.count("capsule")))
    log = main.text_log()
    check("reloaded" in log and "reload failed" not in log.split("reloaded")[0], "SIGHUP reload is logged")
    infer_lines = [l for l in log.splitlines() if " infer " in l]
    http_infers = sum(1 for l in infer_lines if l.startswith("http infer"))
    check(len(infer_lines) == sum(1 for l in log.splitlines() if "infer" in l), "one log line per inference request, none for probes")
    check("forged" not in log.replace("id=a?forged", ""), "a client's newline cannot forge a log line")
    check(metric(main, "focuspatch_bank_reloads_total{result=\"ok\"}") == 4.0, "metrics count 4 good reloads (start, SIGHUP, 2 calls)")
    check(metric(main, "focuspatch_bank_reloads_total{result=\"failed\"}") == 2.0, "metrics count 2 failed reloads")
    check(http_infers > 0, "http inference requests are logged")

    # ---- an uncalibrated bank: the documented encoding, nothing invented -----------------------
    shutil.copy(bank_uncalibrated, bank + ".new")
    os.replace(bank + ".new", bank)
    check(requests.post(h + "/v2/repository/models/focuspatch/load", timeout=60).status_code == 200, "reload: the uncalibrated bank")
    shutil.copy(bank_both, bank)
    ru = reference_uncalibrated
    check(ru["verdict"] == "uncalibrated" and ru["normalized_score"] is None and ru["mask"] is None and ru["regions"] == [],
          "focuspatch-detect calls the 1-shot bank uncalibrated (verdict, null normalized score, no mask)")
    r = infer(main, files[:1])
    u = {k: o["data"] for k, o in outputs_of(r.json()).items()} if r.status_code == 200 else {}
    check(u == {"score": [ru["score"]], "normalized_score": [None], "anomalous": [False], "verdict": ["uncalibrated"],
                "category": ["capsule"], "top_keyword": [ru["top_keywords"][0]["keyword"]], "regions": ["[]"]},
          "uncalibrated over JSON: verdict 'uncalibrated', normalized_score null, anomalous false, regions [] (%s)" % (u or r.text))
    g = s.ModelInfer(grpc_request(files[:1]))
    go = {o.name: o for o in g.outputs}
    check(go["verdict"].contents.bytes_contents == [b"uncalibrated"] and np.isnan(go["normalized_score"].contents.fp32_contents[0])
          and list(go["anomalous"].contents.bool_contents) == [False], "uncalibrated over gRPC: normalized_score NaN")
    r = infer(main, files[:1], parameters={"mask": True})
    check(r.status_code == 400 and "uncalibrated" in r.json()["error"], "uncalibrated: a mask request is refused, not answered with zeros (%s)"
          % r.json().get("error", "")[:120])
    check(grpc_code(lambda: s.ModelInfer(grpc_request(files[:1], mask=True))) == grpc.StatusCode.INVALID_ARGUMENT,
          "uncalibrated: gRPC mask request -> INVALID_ARGUMENT")
finally:
    code = main.stop()
check(code == 0, "SIGTERM: exit status 0 (%s)" % code)

# ---- the bounded queue, deadlines and dynamic batching: requests wait 1.5 s for company ----------
q = Server("--max-batch", "64", "--max-delay-ms", "1500", "--max-queue", "4", "--quiet")
try:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        first = [pool.submit(infer, q, files[:1]) for _ in range(4)]
        time.sleep(0.5)  # the four wait in the queue, which is now full
        over = infer(q, files[:1])
        check(over.status_code == 503 and "overloaded" in over.json()["error"], "a full queue answers 503 overloaded")
        code = grpc_code(lambda: q.stub.ModelInfer(grpc_request(files[:1]), timeout=30))
        check(code == grpc.StatusCode.RESOURCE_EXHAUSTED, "a full queue answers gRPC RESOURCE_EXHAUSTED")
        check(metric(q, "focuspatch_queue_images") == 4.0, "metrics show the queue depth (4 images)")
        check(all(f.result().status_code == 200 for f in first), "the queued requests are answered")
    check(metric(q, "focuspatch_batch_size_count") == 1.0 and metric(q, "focuspatch_batch_size_sum") == 4.0,
          "four concurrent requests ran as one forward pass of 4 images")
    check(infer(q, files[:5]).status_code == 400, "a request larger than the whole queue is refused (400)")
    r = infer(q, files[:1], parameters={"timeout": 100000})
    check(r.status_code == 504 and "deadline" in r.json()["error"], "timeout parameter (0.1 s) passes while queued -> 504")
    code = grpc_code(lambda: q.stub.ModelInfer(grpc_request(files[:1]), timeout=0.2))
    check(code == grpc.StatusCode.DEADLINE_EXCEEDED, "gRPC deadline passes while queued -> DEADLINE_EXCEEDED")
    time.sleep(1.6)
    check(metric(q, "focuspatch_queue_images") == 0.0, "requests past their deadline leave the queue")
finally:
    check(q.stop() == 0, "second server stops cleanly")

# ---- SIGTERM under load: the requests in flight are answered ------------------------------------
t = Server("--max-batch", "64", "--max-delay-ms", "800", "--quiet")
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    http_calls = [pool.submit(infer, t, files[i % 6:i % 6 + 1]) for i in range(6)]
    grpc_calls = [pool.submit(lambda: t.stub.ModelInfer(grpc_request(files[:2]), timeout=30)) for _ in range(4)]
    time.sleep(0.4)  # all ten wait for the batch when the signal comes
    t.proc.send_signal(signal.SIGTERM)
    statuses = [f.result().status_code for f in http_calls]
    scores = [outputs_of(f.result().json())["score"]["data"][0] for f in http_calls]
    grpc_ok = [[o.name for o in f.result().outputs] == DEFAULT_OUTPUTS for f in grpc_calls]
    check(statuses == [200] * 6 and scores == [reference[i % 6]["score"] for i in range(6)], "SIGTERM: the 6 HTTP requests in flight are answered")
    check(all(grpc_ok), "SIGTERM: the 4 gRPC requests in flight are answered")
t.proc.wait(30)
check(t.proc.returncode == 0 and "stopped" in t.text_log(), "SIGTERM under load: clean exit")
try:
    requests.get(t.http + "/v2/health/live", timeout=2)
    refused = False
except requests.ConnectionError:
    refused = True
check(refused, "after SIGTERM nothing listens")
t.stop()

if failures:
    print("%d check(s) failed:\n  " % len(failures) + "\n  ".join(failures))
    sys.exit(1)
print("all checks passed")
