#!/usr/bin/python3
"""Generates the checkpoint-reader fixtures for tests/test_{zip,pickle,torch_archive,safetensors}.cpp.

Run from the project root with Debian's Python (it needs torch 1.13):

    /usr/bin/python3 tests/reference/gen_reader_fixtures.py

Writes into tests/fixtures/readers/ (all small; values follow simple formulas the C++ tests know):
  - torch_state.pt     torch.save of an OrderedDict with a _metadata attribute (so it is rebuilt
                       with SETITEMS then BUILD, like model.state_dict()): f32/f16/bf16/f64/i64/bool
                       tensors, a transposed view, three views of one shared storage (one strided),
                       an nn.Parameter, a 0-d scalar and an empty tensor;
  - torch_deflated.pt  the same archive re-packed with every entry DEFLATE-compressed;
  - torch_nested.pt    a training checkpoint: {'state_dict': {'module.…': …}, 'epoch': 7, …,
                       'optimizer': {...}} as a plain dict;
  - torch_module.pt    torch.save of a whole nn.Sequential (with a non-persistent buffer);
  - torch_v3.pt        a torch-2.x-style archive ('archive/' prefix, byteorder, UntypedStorage,
                       _rebuild_tensor_v3 with a dtype global, _rebuild_from_type_v2, unaligned
                       entries), pickled by a child process with stand-in torch modules since torch
                       1.13 cannot write it; torch_bigendian.pt is the same claiming byteorder 'big';
                       torch_{bad_extent,missing_storage,short_storage,bad_dtype}.pt are archives of
                       that kind whose pickle is deliberately inconsistent with its storages;
  - legacy.pt          torch.save(..., _use_new_zipfile_serialization=False);
  - torchscript_scripted.pt / torchscript_traced.pt: torch.jit.save of a small CLIP-like module
                       (nested submodules, nn.MultiheadAttention, an fp16 parameter, an int64
                       buffer, and for the scripted one a plain tensor attribute as CLIP's
                       attn_mask), with <name>.expected.json holding model.state_dict() names in
                       order, dtypes, shapes and values;
  - tensors.safetensors written by the small writer below (all ten dtypes, __metadata__, an empty
    tensor, a space-padded header);
  - plain.zip (Python zipfile: deflated, stored, empty, directory and nested entries, a comment)
    and zip64.zip (hand-written with ZIP64 extra fields and end records);
  - plain_p{2,3,4,5}.pkl: one Python value pickled with each protocol for the pickle VM tests.
"""
import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "readers")


def path(name):
    return os.path.join(OUT, name)


def writestr(z, name, data, compress_type=zipfile.ZIP_STORED):
    """zipfile's writestr with a fixed timestamp, so regenerating gives identical files."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = compress_type
    z.writestr(info, data)


# ---- torch.save ---------------------------------------------------------------------------------

def torch_state():
    sd = collections.OrderedDict()
    sd["w_f32"] = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5           # 0.5 * i
    sd["w_f16"] = (torch.arange(10, dtype=torch.float32) * 0.25 - 1.0).half()          # 0.25 * i - 1
    sd["w_bf16"] = (torch.arange(6, dtype=torch.float32) * -0.5).reshape(2, 3).bfloat16()  # -0.5 * i
    sd["w_f64"] = torch.arange(5, dtype=torch.float64) / 8                             # i / 8
    sd["ids_i64"] = torch.arange(7, dtype=torch.int64) - 3                             # i - 3
    sd["mask_bool"] = torch.tensor([True, False, True])
    sd["w_t"] = (torch.arange(6, dtype=torch.float32).reshape(2, 3) + 1).t()           # [3, 2], strides [1, 3]
    shared = torch.arange(20, dtype=torch.float32) * 2                                 # 2 * i
    sd["shared_a"] = shared[:8].view(2, 4)
    sd["shared_b"] = shared[8:].view(3, 4)                                             # offset 8
    sd["shared_c"] = shared[1::5]                                                      # offset 1, stride 5
    sd["param"] = nn.Parameter(torch.arange(4, dtype=torch.float32) * 3)               # 3 * i
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    assert not sd["w_t"].is_contiguous()
    torch.save(sd, path("torch_state.pt"))

    # The same entries, DEFLATE-compressed (torch itself always stores them).
    with zipfile.ZipFile(path("torch_state.pt")) as src, \
            zipfile.ZipFile(path("torch_deflated.pt"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            writestr(dst, info.filename, src.read(info.filename), zipfile.ZIP_DEFLATED)


def torch_nested():
    ckpt = {
        "state_dict": {
            "module.enc.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) - 2,  # i - 2
            "module.enc.bias": torch.full((2,), 0.75),
        },
        "epoch": 7,
        "lr": 0.125,
        "name": "tiny",
        "optimizer": {
            "state": {0: {"exp_avg": torch.ones(2, 3) * 0.5}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
    }
    torch.save(ckpt, path("torch_nested.pt"))


def torch_module():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    with torch.no_grad():
        m[0].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5)  # 0.5 * i
        m[0].bias.copy_(torch.tensor([1.0, -1.0]))
        m[1].weight.fill_(2.0)
        m[1].bias.fill_(-0.5)
    m.register_buffer("kept", torch.tensor([4.0, 5.0]))
    m.register_buffer("dropped", torch.tensor([9.0]), persistent=False)
    assert list(m.state_dict().keys()) == ["kept", "0.weight", "0.bias", "1.weight", "1.bias"]
    torch.save(m, path("torch_module.pt"))


# A child process pickles with stand-in torch modules, so that the pickle names torch 2.x globals
# (torch.UntypedStorage, torch._utils._rebuild_tensor_v3, torch.float16) that torch 1.13 lacks.
FAKE_TORCH_PICKLER = r'''
import collections, pickle, struct, sys, types
mods = {n: types.ModuleType(n) for n in ["torch", "torch._utils", "torch._tensor", "torch.nn", "torch.nn.parameter"]}
sys.modules.update(mods)
torch = mods["torch"]
def fn(module, name):
    f = lambda *a: None
    f.__module__, f.__name__, f.__qualname__ = module, name, name
    setattr(mods[module], name, f)
    return f
v2 = fn("torch._utils", "_rebuild_tensor_v2")
v3 = fn("torch._utils", "_rebuild_tensor_v3")
rebuild_param = fn("torch._utils", "_rebuild_parameter")
from_type = fn("torch._tensor", "_rebuild_from_type_v2")
class UntypedStorage: pass
UntypedStorage.__module__ = "torch"; torch.UntypedStorage = UntypedStorage
class FloatStorage: pass
FloatStorage.__module__ = "torch"; torch.FloatStorage = FloatStorage
class Parameter: pass
Parameter.__module__ = "torch.nn.parameter"; mods["torch.nn.parameter"].Parameter = Parameter
class dtype:
    def __init__(self, name): self.name = name
    def __reduce__(self): return self.name
dtype.__module__ = "torch"
for n in ["float16", "bfloat16", "float32"]: setattr(torch, n, dtype(n))
class Storage:
    def __init__(self, kind, key, numel): self.kind, self.key, self.numel = kind, key, numel
class Call:
    def __init__(self, f, args): self.f, self.args = f, args
    def __reduce__(self): return (self.f, self.args)
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage): return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None
hooks = collections.OrderedDict()
sd = collections.OrderedDict()
mode = sys.argv[1]
if mode == "v3":
    # 'a': f16 [2, 3] from an untyped 12-byte storage (v3 names the dtype).
    sd["a"] = Call(v3, (Storage(UntypedStorage, "0", 12), 0, (2, 3), (3, 1), False, hooks, torch.float16))
    # 'b': a tensor subclass (as torch 2 pickles a Parameter with extra state): f32 [4] from offset 1.
    sd["b"] = Call(from_type, (v2, Parameter, (Storage(FloatStorage, "1", 5), 1, (4,), (1,), False, hooks), {}))
    # 'c': a parameter wrapping a bf16 view of the same untyped storage as 'a' (bytes 4..11).
    sd["c"] = Call(rebuild_param, (Call(v3, (Storage(UntypedStorage, "0", 12), 2, (4,), (1,), False, hooks, torch.bfloat16)), True, hooks))
elif mode == "bad_extent":      # a [4, 4] view of a 5-element storage
    sd["big"] = Call(v2, (Storage(FloatStorage, "1", 5), 0, (4, 4), (4, 1), False, hooks))
elif mode == "missing_storage":  # storage key '7' has no entry
    sd["lost"] = Call(v2, (Storage(FloatStorage, "7", 2), 0, (2,), (1,), False, hooks))
elif mode == "short_storage":    # the pickle claims 100 floats, the entry holds 5
    sd["short"] = Call(v2, (Storage(FloatStorage, "1", 100), 0, (100,), (1,), False, hooks))
elif mode == "bad_dtype":        # a v3 tensor of a dtype focuspatch does not know
    torch.complex64 = dtype("complex64")
    sd["z"] = Call(v3, (Storage(UntypedStorage, "0", 12), 0, (1,), (1,), False, hooks, torch.complex64))
P(sys.stdout.buffer, protocol=2).dump(sd)
'''


def torch_v3():
    f16 = struct.pack("<6e", *[i * 0.5 - 1 for i in range(6)])           # 'a' = 0.5 * i - 1
    floats = struct.pack("<5f", *[10.0 + i for i in range(5)])           # 'b' = 11, 12, 13, 14
    for name, order, mode in [("torch_v3.pt", "little", "v3"), ("torch_bigendian.pt", "big", "v3"),
                              ("torch_bad_extent.pt", "little", "bad_extent"),
                              ("torch_missing_storage.pt", "little", "missing_storage"),
                              ("torch_short_storage.pt", "little", "short_storage"),
                              ("torch_bad_dtype.pt", "little", "bad_dtype")]:
        pkl = subprocess.run([sys.executable, "-c", FAKE_TORCH_PICKLER, mode], check=True, capture_output=True).stdout
        with zipfile.ZipFile(path(name), "w", zipfile.ZIP_STORED) as z:
            writestr(z, "archive/data.pkl", pkl)
            writestr(z, "archive/byteorder", order)
            writestr(z, "archive/data/0", f16)
            writestr(z, "archive/data/1", floats)
            writestr(z, "archive/version", "3\n")
            writestr(z, "archive/.data/serialization_id", "1234567890")


def legacy():
    torch.save({"a": torch.ones(2)}, path("legacy.pt"), _use_new_zipfile_serialization=False)


# ---- TorchScript --------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, width: int, heads: int, ctx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(width, 2 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(2 * width, width))]))
        self.attn_mask = torch.full((ctx, ctx), float("-inf")).triu(1)  # a plain attribute, as in CLIP

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(x)


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, ctx: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(width, heads, ctx) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Tower(nn.Module):
    def __init__(self, width: int = 8, ctx: int = 3):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.transformer = Transformer(width, 2, 2, ctx)
        self.proj = nn.Parameter(torch.zeros(width, 4).half())  # stored as fp16
        self.register_buffer("position_ids", torch.arange(ctx))

    def forward(self, x):
        x = x + self.class_embedding
        x = self.transformer(x)
        return x @ self.proj.float()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = Tower()
        self.logit_scale = nn.Parameter(torch.tensor(4.5))

    def forward(self, x):
        return self.visual(x) * self.logit_scale


def dtype_name(t):
    return {torch.float32: "f32", torch.float16: "f16", torch.float64: "f64", torch.int64: "i64"}[t.dtype]


def torchscript():
    torch.manual_seed(0)
    model = Model().eval()
    with torch.no_grad():
        for i, (name, t) in enumerate(model.state_dict().items()):
            values = ((torch.arange(t.numel()) % 11) - 5).reshape(t.shape) * (0.0625 * (i % 3 + 1))
            t.copy_(values.to(t.dtype) if t.is_floating_point() else torch.arange(t.numel()).reshape(t.shape) + i)
    x = torch.randn(3, 1, 8)
    for kind in ["scripted", "traced"]:
        module = torch.jit.script(model) if kind == "scripted" else torch.jit.trace(model, x)
        name = f"torchscript_{kind}.pt"
        torch.jit.save(module, path(name))
        loaded = torch.jit.load(path(name))
        sd = loaded.state_dict()
        expected = {
            "names": list(sd.keys()),
            "tensors": {k: {"dtype": dtype_name(v), "shape": list(v.shape), "values": v.double().flatten().tolist()}
                        for k, v in sd.items()},
        }
        if kind == "scripted":
            # Plain tensor attributes a scripted module keeps but state_dict() leaves out.
            expected["attributes"] = [f"visual.transformer.resblocks.{i}.attn_mask" for i in range(2)]
            assert torch.equal(getattr(loaded.visual.transformer.resblocks, "0").attn_mask, model.visual.transformer.resblocks[0].attn_mask)
        assert list(sd.keys()) == list(model.state_dict().keys())
        with open(path(name + ".expected.json"), "w") as f:
            json.dump(expected, f, indent=0)


# ---- safetensors ------------------------------------------------------------------------------

def write_safetensors(filename, tensors, metadata=None, pad_to=8):
    """tensors: list of (name, dtype name, shape, raw little-endian bytes), written in that order."""
    header, offset, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % pad_to)  # the format lets writers pad the header with spaces
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def safetensors_fixture():
    bf16 = lambda x: struct.unpack("<I", struct.pack("<f", x))[0] >> 16  # exact for these values
    write_safetensors(path("tensors.safetensors"), [
        ("f32", "F32", [2, 3], struct.pack("<6f", *[0.5 * i for i in range(6)])),           # 0.5 * i
        ("f16", "F16", [4], struct.pack("<4e", *[0.25 * i - 1 for i in range(4)])),        # 0.25 * i - 1
        ("bf16", "BF16", [2, 2], struct.pack("<4H", *[bf16(-2.0 * i) for i in range(4)])),  # -2 * i
        ("f64", "F64", [3], struct.pack("<3d", *[i / 8 for i in range(3)])),                # i / 8
        ("i64", "I64", [2], struct.pack("<2q", -5, 1 << 40)),
        ("i32", "I32", [2], struct.pack("<2i", -7, 7)),
        ("i16", "I16", [2], struct.pack("<2h", -300, 300)),
        ("i8", "I8", [2], struct.pack("<2b", -8, 8)),
        ("u8", "U8", [3], bytes([0, 128, 255])),
        ("flags", "BOOL", [2], bytes([1, 0])),
        ("nothing", "F32", [0, 4], b""),
    ], metadata={"format": "pt", "note": "h\u00e9llo \U0001F600"})


# ---- zip --------------------------------------------------------------------------------------

def zip_fixtures():
    with zipfile.ZipFile(path("plain.zip"), "w") as z:
        writestr(z, "hello.txt", "hello zip\n" * 50, zipfile.ZIP_DEFLATED)
        writestr(z, "stored.bin", bytes(range(256)))
        writestr(z, "empty.txt", b"")
        writestr(z, "dir/", b"")
        writestr(z, "dir/nested name.txt", "nested\n", zipfile.ZIP_DEFLATED)
        z.comment = b"a comment at the end"

    # ZIP64 by hand: every size and offset in the central directory is 0xffffffff with the real
    # value in the ZIP64 extra field, and the end record points to ZIP64 end records.
    entries = [("first.txt", b"first entry\n"), ("second.bin", bytes(range(40)))]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        offset, crc, n = len(out), zlib.crc32(data), name.encode()
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff, len(n), len(local_extra))
        out += n + local_extra + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff,
                               len(n), len(extra), 0, 0, 0, 0, 0xffffffff)
        central += n + extra
    cd_offset = len(out)
    out += central
    end64_at = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064b50, 0, end64_at, 1)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0xffff, 0xffff, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
    with open(path("zip64.zip"), "wb") as f:
        f.write(out)
    with zipfile.ZipFile(path("zip64.zip")) as z:  # Python's reader agrees
        assert z.read("second.bin") == bytes(range(40)) and z.testzip() is None


# ---- pickle -----------------------------------------------------------------------------------

def pickle_fixtures():
    shared = [1, 2]
    value = {
        "int": 1, "neg": -300, "big": 2 ** 40, "min": -2 ** 63, "float": 1.5, "tiny": -2.5e-300,
        "str": "h\u00e9llo \u2713 \U0001F600", "long_str": "x" * 300, "bytes": b"\x00\x01\xff",
        "list": [1, 2, 3], "tuple": (1, "a", None), "nested": {"a": [True, False]}, "empty": [],
        "etuple": (), "set": {7}, "frozen": frozenset({8}), "shared": shared, "shared_again": shared,
        "odict": collections.OrderedDict(a=1), "int_key": {3: "three"},
    }
    for proto in [2, 3, 4, 5]:
        with open(path(f"plain_p{proto}.pkl"), "wb") as f:
            pickle.dump(value, f, protocol=proto)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch_state()
    torch_nested()
    torch_module()
    torch_v3()
    legacy()
    torchscript()
    safetensors_fixture()
    zip_fixtures()
    pickle_fixtures()
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")
