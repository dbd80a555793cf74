#!/usr/bin/python3
"""Generates the CLIP model fixtures for the C++ model/converter tests: small random-weight CLIP
checkpoints in the formats users have, and reference outputs from clip_reference.py.

Run from the project root with Debian's Python (torch 1.13), OpenAI CLIP's source and ftfy beside
the project (OpenAI's model.py builds the TorchScript archive; its tokenizer gives the real ids):

    PYTHONPATH=/work/ref/ftfy /usr/bin/python3 tests/reference/gen_clip_fixtures.py \\
        [--clip /work/ref/CLIP] [--vocab /work/shared/clip/bpe_simple_vocab_16e6.txt.gz] \\
        [--cross-check]

Writes tests/fixtures/clip/<case>/ for each case in CASES: the checkpoint file(s), a
reference.safetensors and a manifest.json (see tests/reference/README.md for the tensor names).
Everything is seeded, so a rerun rewrites identical bytes. --cross-check also builds OpenAI's
clip/model.py on the same weights and prints how far it is from the reference (the table in the
README); it writes nothing extra.

Weights: each case draws its tensors from a seeded generator, rounded to the case's storage grid
(float16 where any of its files stores float16, so every file of a case holds exactly the same
values); the reference is computed from those values in float64 and stored as float32.
"""
import argparse
import collections
import importlib
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_reference as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "clip")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# grid: the dtype every weight is rounded to (None = full float32); alt_grid: the patch grid of the
# second, differently sized test image.
CASES = [
    dict(name="p8_r32", seed=101, patch=8, res=32, vw=64, vl=2, vh=4, tw=32, tl=2, th=2, vocab=512, ctx=77, dim=32,
         act="quick_gelu", grid=None, alt_grid=6, logit_scale=math.log(1 / 0.07)),
    dict(name="p4_r28", seed=202, patch=4, res=28, vw=48, vl=3, vh=3, tw=24, tl=1, th=2, vocab=300, ctx=16, dim=16,
         act="quick_gelu", grid=torch.float16, alt_grid=10, logit_scale=4.6052),
    dict(name="p14_r42_hf", seed=303, patch=14, res=42, vw=96, vl=1, vh=6, tw=32, tl=2, th=4, vocab=400, ctx=77, dim=48,
         act="gelu", grid=torch.float16, alt_grid=5, logit_scale=3.9),
    dict(name="fullvocab_tiny", seed=404, patch=16, res=32, vw=32, vl=1, vh=2, tw=8, tl=1, th=2, vocab=49408, ctx=77, dim=8,
         act="quick_gelu", grid=torch.float16, alt_grid=3, logit_scale=4.2),
]
REAL_TEXTS = ["a photo of a scratched metal nut", "flawless"]


def spec_of(case):
    return ref.ModelSpec(vision_heads=case["vh"], text_heads=case["th"], activation=case["act"])


# ---------------------------------------------------------------- random weights

def block_weights(g, prefix, w):
    """One pre-LN residual block in OpenAI's naming and order. Scales keep every part visible:
    q/k rows a little larger than W^-0.5 so attention is far from uniform, LayerNorm gains 1 +/- 0.1,
    small biases, and residual branches of order one."""
    def randn(*shape, std):
        return torch.randn(*shape, generator=g) * std

    in_proj = randn(3 * w, w, std=w ** -0.5)
    in_proj[: 2 * w] *= 1.6  # q and k: sharper attention
    out = collections.OrderedDict()
    out[prefix + "attn.in_proj_weight"] = in_proj
    out[prefix + "attn.in_proj_bias"] = randn(3 * w, std=0.05)
    out[prefix + "attn.out_proj.weight"] = randn(w, w, std=0.8 * w ** -0.5)
    out[prefix + "attn.out_proj.bias"] = randn(w, std=0.02)
    out[prefix + "ln_1.weight"] = 1 + randn(w, std=0.1)
    out[prefix + "ln_1.bias"] = randn(w, std=0.05)
    out[prefix + "mlp.c_fc.weight"] = randn(4 * w, w, std=w ** -0.5)
    out[prefix + "mlp.c_fc.bias"] = randn(4 * w, std=0.1)
    out[prefix + "mlp.c_proj.weight"] = randn(w, 4 * w, std=0.8 * (4 * w) ** -0.5)
    out[prefix + "mlp.c_proj.bias"] = randn(w, std=0.02)
    out[prefix + "ln_2.weight"] = 1 + randn(w, std=0.1)
    out[prefix + "ln_2.bias"] = randn(w, std=0.05)
    return out


def make_weights(case):
    """OpenAI-naming state dict (OrderedDict, OpenAI's key order), float32 values on the case's grid."""
    g = torch.Generator().manual_seed(case["seed"])
    w, p, wt = case["vw"], case["patch"], case["tw"]
    tokens = (case["res"] // p) ** 2 + 1

    def randn(*shape, std):
        return torch.randn(*shape, generator=g) * std

    sd = collections.OrderedDict()
    sd["positional_embedding"] = randn(case["ctx"], wt, std=0.05)
    sd["text_projection"] = randn(wt, case["dim"], std=wt ** -0.5)
    sd["logit_scale"] = torch.tensor(case["logit_scale"], dtype=torch.float32)
    sd["visual.class_embedding"] = randn(w, std=w ** -0.5)
    sd["visual.positional_embedding"] = randn(tokens, w, std=w ** -0.5)
    sd["visual.proj"] = randn(w, case["dim"], std=w ** -0.5)
    sd["visual.conv1.weight"] = randn(w, 3, p, p, std=(3 * p * p) ** -0.5)
    sd["visual.ln_pre.weight"] = 1 + randn(w, std=0.1)
    sd["visual.ln_pre.bias"] = randn(w, std=0.05)
    for i in range(case["vl"]):
        sd.update(block_weights(g, f"visual.transformer.resblocks.{i}.", w))
    sd["visual.ln_post.weight"] = 1 + randn(w, std=0.1)
    sd["visual.ln_post.bias"] = randn(w, std=0.05)
    for i in range(case["tl"]):
        sd.update(block_weights(g, f"transformer.resblocks.{i}.", wt))
    sd["token_embedding.weight"] = randn(case["vocab"], wt, std=0.1)
    sd["ln_final.weight"] = 1 + randn(wt, std=0.1)
    sd["ln_final.bias"] = randn(wt, std=0.05)
    if case["grid"] is not None:
        sd = collections.OrderedDict((k, v.to(case["grid"]).to(torch.float32)) for k, v in sd.items())
    return sd


# ---------------------------------------------------------------- inputs

def make_images(g, n, res):
    """Smooth colour fields plus pixel noise in [0,1], CLIP-normalised (about -1.8 .. 2.1)."""
    low = torch.rand(n, 3, 3, 3, generator=g)
    img = F.interpolate(low, size=(res, res), mode="bilinear", align_corners=False)
    img = (img + 0.2 * torch.randn(n, 3, res, res, generator=g)).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).reshape(1, 3, 1, 1)
    return ((img - mean) / std).to(torch.float32).contiguous()


def make_token_ids(g, case):
    v, c = case["vocab"], case["ctx"]
    sot, eot = v - 2, v - 1
    ends = [min(5, c - 1), c // 2 - 1, c - 1]  # a short text, a middle one, one filling the context
    ids = torch.zeros(len(ends), c, dtype=torch.int64)
    for r, e in enumerate(ends):
        ids[r, 0] = sot
        ids[r, 1:e] = torch.randint(1, v - 2, (e - 1,), generator=g)
        ids[r, e] = eot
    return ids


def make_prompts(g, case, sd):
    """CoOp-style prompts: SOT, learned context vectors, a few class-name tokens, EOT, padding;
    given as token embeddings (no positional embedding) plus the EOT position per row."""
    v, c, wt = case["vocab"], case["ctx"], case["tw"]
    table = sd["token_embedding.weight"]
    layouts = [(4, 3, min(9, c - 1)), (min(8, c - 4), 2, c - 1)]  # (learned vectors, name tokens, eot position)
    emb = torch.zeros(len(layouts), c, wt)
    eots = []
    for r, (n_ctx, n_name, eot) in enumerate(layouts):
        ids = torch.zeros(c, dtype=torch.int64)
        ids[0] = v - 2
        ids[1:eot] = torch.randint(1, v - 2, (eot - 1,), generator=g)
        ids[eot] = v - 1
        emb[r] = table[ids]
        emb[r, 1:1 + n_ctx] = torch.randn(n_ctx, wt, generator=g) * 0.15  # the learned context
        assert 1 + n_ctx + n_name <= eot
        eots.append(eot)
    return emb.to(torch.float32).contiguous(), torch.tensor(eots, dtype=torch.int64)


def real_token_ids(clip_dir, vocab_path, ctx):
    sys.path.insert(0, os.path.join(clip_dir, "clip"))
    simple_tokenizer = importlib.import_module("simple_tokenizer")
    tok = simple_tokenizer.SimpleTokenizer(bpe_path=vocab_path)
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    assert (sot, eot) == (49406, 49407)
    ids = torch.zeros(len(REAL_TEXTS), ctx, dtype=torch.int64)
    for r, text in enumerate(REAL_TEXTS):
        row = [sot] + tok.encode(text) + [eot]
        ids[r, :len(row)] = torch.tensor(row)
    return ids


# ---------------------------------------------------------------- safetensors

_ST_DTYPES = {torch.float32: ("F32", "<f4"), torch.float16: ("F16", "<f2"), torch.float64: ("F64", "<f8"),
              torch.int64: ("I64", "<i8")}
_ST_NUMPY = {name: np.dtype(code) for name, code in _ST_DTYPES.values()}


def write_safetensors(filename, tensors, metadata=None):
    """tensors: {name: tensor}. Laid out as the safetensors library does (larger element sizes
    first, then by name) so every tensor is aligned to its element size; header padded to 8 bytes
    with spaces."""
    header, offset, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0])):
        code, np_dtype = _ST_DTYPES[t.dtype]
        data = t.detach().contiguous().numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(filename):
    with open(filename, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = collections.OrderedDict()
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=_ST_NUMPY[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------- Hugging Face naming

_HF_BLOCK = [("ln_1.weight", "layer_norm1.weight"), ("ln_1.bias", "layer_norm1.bias"),
             ("attn.out_proj.weight", "self_attn.out_proj.weight"), ("attn.out_proj.bias", "self_attn.out_proj.bias"),
             ("ln_2.weight", "layer_norm2.weight"), ("ln_2.bias", "layer_norm2.bias"),
             ("mlp.c_fc.weight", "mlp.fc1.weight"), ("mlp.c_fc.bias", "mlp.fc1.bias"),
             ("mlp.c_proj.weight", "mlp.fc2.weight"), ("mlp.c_proj.bias", "mlp.fc2.bias")]


def openai_to_hf(sd):
    """OpenAI naming -> Hugging Face CLIPModel naming (HF's state_dict order, position_ids buffers
    included as older HF files have them). q/k/v are split out of in_proj; projections transposed."""
    hf = collections.OrderedDict()
    hf["logit_scale"] = sd["logit_scale"]

    def blocks(src, dst, n):
        for i in range(n):
            s, d = f"{src}{i}.", f"{dst}{i}."
            wq, wk, wv = sd[s + "attn.in_proj_weight"].chunk(3, dim=0)
            bq, bk, bv = sd[s + "attn.in_proj_bias"].chunk(3, dim=0)
            for name, t in [("k_proj.weight", wk), ("k_proj.bias", bk), ("v_proj.weight", wv), ("v_proj.bias", bv),
                            ("q_proj.weight", wq), ("q_proj.bias", bq)]:
                hf[d + "self_attn." + name] = t.clone()
            for ours, theirs in _HF_BLOCK:
                hf[d + theirs] = sd[s + ours]

    ctx = sd["positional_embedding"].shape[0]
    tokens = sd["visual.positional_embedding"].shape[0]
    hf["text_model.embeddings.position_ids"] = torch.arange(ctx, dtype=torch.int64)[None]
    hf["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    blocks("transformer.resblocks.", "text_model.encoder.layers.", ref.count_blocks(sd, "transformer.resblocks."))
    hf["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    hf["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    hf["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf["vision_model.embeddings.position_ids"] = torch.arange(tokens, dtype=torch.int64)[None]
    hf["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    hf["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]  # sic: HF's spelling
    hf["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    blocks("visual.transformer.resblocks.", "vision_model.encoder.layers.",
           ref.count_blocks(sd, "visual.transformer.resblocks."))
    hf["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
    hf["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
    hf["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    hf["text_projection.weight"] = sd["text_projection"].t().contiguous()
    return collections.OrderedDict((k, v.contiguous()) for k, v in hf.items())


def hf_to_openai(hf):
    """The converter's direction: Hugging Face naming -> OpenAI naming, q/k/v concatenated."""
    sd = {}

    def blocks(src, dst):
        i = 0
        while f"{src}{i}.self_attn.q_proj.weight" in hf:
            s, d = f"{src}{i}.", f"{dst}{i}."
            sd[d + "attn.in_proj_weight"] = torch.cat([hf[s + f"self_attn.{x}_proj.weight"] for x in "qkv"], dim=0)
            sd[d + "attn.in_proj_bias"] = torch.cat([hf[s + f"self_attn.{x}_proj.bias"] for x in "qkv"], dim=0)
            for ours, theirs in _HF_BLOCK:
                sd[d + ours] = hf[s + theirs]
            i += 1

    sd["logit_scale"] = hf["logit_scale"]
    sd["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
    sd["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
    blocks("text_model.encoder.layers.", "transformer.resblocks.")
    sd["ln_final.weight"] = hf["text_model.final_layer_norm.weight"]
    sd["ln_final.bias"] = hf["text_model.final_layer_norm.bias"]
    sd["visual.class_embedding"] = hf["vision_model.embeddings.class_embedding"]
    sd["visual.conv1.weight"] = hf["vision_model.embeddings.patch_embedding.weight"]
    sd["visual.positional_embedding"] = hf["vision_model.embeddings.position_embedding.weight"]
    sd["visual.ln_pre.weight"] = hf["vision_model.pre_layrnorm.weight"]
    sd["visual.ln_pre.bias"] = hf["vision_model.pre_layrnorm.bias"]
    blocks("vision_model.encoder.layers.", "visual.transformer.resblocks.")
    sd["visual.ln_post.weight"] = hf["vision_model.post_layernorm.weight"]
    sd["visual.ln_post.bias"] = hf["vision_model.post_layernorm.bias"]
    sd["visual.proj"] = hf["visual_projection.weight"].t()
    sd["text_projection"] = hf["text_projection.weight"].t()
    return sd


def hf_config(case, dtype_name):
    v, wt, w = case["vocab"], case["tw"], case["vw"]
    return collections.OrderedDict([
        ("architectures", ["CLIPModel"]),
        ("initializer_factor", 1.0),
        ("logit_scale_init_value", 2.6592),
        ("model_type", "clip"),
        ("projection_dim", case["dim"]),
        ("text_config", collections.OrderedDict([
            ("bos_token_id", v - 2), ("eos_token_id", v - 1), ("pad_token_id", 1),
            ("hidden_act", case["act"]), ("hidden_size", wt), ("initializer_range", 0.02),
            ("intermediate_size", 4 * wt), ("layer_norm_eps", 1e-05), ("max_position_embeddings", case["ctx"]),
            ("model_type", "clip_text_model"), ("num_attention_heads", case["th"]),
            ("num_hidden_layers", case["tl"]), ("projection_dim", case["dim"]), ("vocab_size", v)])),
        ("vision_config", collections.OrderedDict([
            ("hidden_act", case["act"]), ("hidden_size", w), ("image_size", case["res"]), ("initializer_range", 0.02),
            ("intermediate_size", 4 * w), ("layer_norm_eps", 1e-05), ("model_type", "clip_vision_model"),
            ("num_attention_heads", case["vh"]), ("num_channels", 3), ("num_hidden_layers", case["vl"]),
            ("patch_size", case["patch"]), ("projection_dim", case["dim"])])),
        ("torch_dtype", dtype_name),
        ("transformers_version", "4.30.2"),
    ])


def same_tensors(a, b):
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- OpenAI's model.py

def openai_model_module(clip_dir):
    sys.path.insert(0, os.path.join(clip_dir, "clip"))
    return importlib.import_module("model")


def build_openai(m, sd, case, float32=True):
    """OpenAI's build_model on our weights. build_model takes heads = width // 64, which does not
    fit these tiny widths, so its two constructors are wrapped to take the case's head counts; the
    rest (sizes from tensor shapes, convert_weights, load_state_dict) is build_model's own."""
    orig_vt, orig_clip = m.VisionTransformer, m.CLIP

    def vision_transformer(**kw):
        kw["heads"] = case["vh"]
        return orig_vt(**kw)

    def clip_ctor(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
                  vocab_size, transformer_width, transformer_heads, transformer_layers):
        return orig_clip(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
                         vocab_size, transformer_width, case["th"], transformer_layers)

    m.VisionTransformer, m.CLIP = vision_transformer, clip_ctor
    try:
        model = m.build_model(collections.OrderedDict(sd))  # a copy: build_model deletes keys
    finally:
        m.VisionTransformer, m.CLIP = orig_vt, orig_clip
    if case["act"] == "gelu":  # model.py hard-wires QuickGELU
        for mod in model.modules():
            if isinstance(mod, nn.Sequential) and hasattr(mod, "gelu"):
                mod.gelu = nn.GELU()
    if float32:
        model.float()
        model.load_state_dict(sd)  # again, in float32: convert_weights had rounded to float16
    return model.eval()


def openai_state_dict_file(m, sd, case, dtype):
    """What users' `torch.save(model.state_dict())` holds: OpenAI's module's own state_dict
    (OrderedDict with _metadata), every floating tensor in `dtype`."""
    model = build_openai(m, sd, case)
    model.to(dtype)
    model.load_state_dict(sd)
    out = model.state_dict()
    for k, v in out.items():
        assert v.dtype == dtype and torch.equal(v.float(), sd[k]), k
    return out


# ---------------------------------------------------------------- reference outputs

def reference_outputs(case, sd, extras):
    spec = spec_of(case)
    g = torch.Generator().manual_seed(case["seed"] + 1)
    t = collections.OrderedDict()
    t["input.images"] = make_images(g, 2, case["res"])
    vis = ref.encode_image(sd, t["input.images"], spec)
    t["out.image_embeddings"] = vis["image_embeddings"]
    t["out.patch_tokens"] = vis["patch_tokens"]
    for i, layer in enumerate(vis["layer_tokens"]):
        t[f"out.layer_tokens.{i}"] = layer
    t["input.images_alt"] = make_images(g, 1, case["alt_grid"] * case["patch"])
    alt = ref.encode_image(sd, t["input.images_alt"], spec)
    t["out.alt.image_embeddings"] = alt["image_embeddings"]
    t["out.alt.patch_tokens"] = alt["patch_tokens"]
    t["input.token_ids"] = make_token_ids(g, case)
    t["out.text_embeddings"] = ref.encode_text(sd, t["input.token_ids"], spec)
    t["input.prompt_embeddings"], t["input.prompt_eot"] = make_prompts(g, case, sd)
    t["out.prompt_text_embeddings"] = ref.encode_text_embeddings(sd, t["input.prompt_embeddings"],
                                                                 t["input.prompt_eot"], spec)
    t["logit_scale"] = sd["logit_scale"].reshape(())
    if "real_token_ids" in extras:
        t["input.real_token_ids"] = extras["real_token_ids"]
        t["out.real_text_embeddings"] = ref.encode_text(sd, t["input.real_token_ids"], spec)

    # The prompt path with plain token embeddings must be the token-id path.
    ids = t["input.token_ids"]
    via_prompt = ref.encode_text_embeddings(sd, sd["token_embedding.weight"][ids], ref.eot_positions(ids), spec)
    assert torch.equal(via_prompt, t["out.text_embeddings"])
    # The bicubic position embedding resize is the written-out one.
    pos = sd["visual.positional_embedding"].double()
    g0 = round(math.sqrt(pos.shape[0] - 1))
    grid = pos[1:].reshape(g0, g0, -1).permute(2, 0, 1)
    slow = ref.bicubic_resize_reference(grid, case["alt_grid"], case["alt_grid"]).permute(1, 2, 0).reshape(-1, pos.shape[1])
    assert torch.allclose(ref.resize_position_embedding(pos, (case["alt_grid"],) * 2)[1:], slow, atol=1e-12)
    # Outputs must not be trivial: distinct images give distinct embeddings, attention is used.
    for key in ["out.image_embeddings", "out.text_embeddings", "out.prompt_text_embeddings"]:
        e = F.normalize(t[key], dim=-1)
        cos = e @ e.T
        assert (cos - torch.eye(len(e), dtype=cos.dtype)).abs().max() < 0.98, (case["name"], key, cos)
    return collections.OrderedDict((k, v.to(torch.float32) if v.is_floating_point() else v) for k, v in t.items())


def manifest(case, sd, files):
    return collections.OrderedDict([
        ("case", case["name"]),
        ("files", files),
        ("image_size", case["res"]), ("patch_size", case["patch"]),
        ("vision_width", case["vw"]), ("vision_layers", case["vl"]), ("vision_heads", case["vh"]),
        ("vision_mlp_width", 4 * case["vw"]),
        ("text_width", case["tw"]), ("text_layers", case["tl"]), ("text_heads", case["th"]),
        ("text_mlp_width", 4 * case["tw"]),
        ("vocab_size", case["vocab"]), ("context_length", case["ctx"]), ("embed_dim", case["dim"]),
        ("activation", case["act"]), ("layer_norm_eps", 1e-5),
        ("logit_scale", float(sd["logit_scale"])),
        ("layer_tokens", list(range(case["vl"]))),
        ("alt_image_size", case["alt_grid"] * case["patch"]),
        ("weights_grid", "float16" if case["grid"] is torch.float16 else "float32"),
        ("sot_id", case["vocab"] - 2), ("eot_id", case["vocab"] - 1),
    ])


# ---------------------------------------------------------------- per case

def save_torch(obj, path):
    torch.save(obj, path)
    back = torch.load(path)
    state = back["state_dict"] if "state_dict" in back else back
    orig = obj["state_dict"] if "state_dict" in obj else obj
    assert same_tensors(state, orig) and list(state) == list(orig), path


def write_case(case, m, args):
    d = os.path.join(OUT_DIR, case["name"])
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):  # files only; subfolders are rewritten below
        if os.path.isfile(os.path.join(d, old)):
            os.remove(os.path.join(d, old))
    sd = make_weights(case)
    extras, files = {}, []
    name = case["name"]

    if name == "p8_r32":
        full = openai_state_dict_file(m, sd, case, torch.float32)
        save_torch(full, os.path.join(d, "openai_state_dict.pt"))
        files.append({"path": "openai_state_dict.pt", "format": "torch_state_dict", "naming": "openai", "dtype": "float32"})
        wrapped = collections.OrderedDict(("module." + k, v) for k, v in full.items())
        wrapped._metadata = collections.OrderedDict(
            [("", {"version": 1})] + [("module" + ("." + k if k else ""), v) for k, v in full._metadata.items()])
        save_torch({"epoch": 3, "name": "x", "state_dict": wrapped}, os.path.join(d, "openclip_epoch.pt"))
        files.append({"path": "openclip_epoch.pt", "format": "torch_checkpoint", "naming": "openai",
                      "prefix": "module.", "dtype": "float32"})

    elif name == "p4_r28":
        files.append(write_jit(m, sd, case, os.path.join(d, "openai_jit.pt")))

    elif name == "p14_r42_hf":
        hf = openai_to_hf(sd)
        back = hf_to_openai(hf)
        assert same_tensors(back, sd), "HF -> OpenAI naming does not round-trip"
        assert same_tensors(openai_to_hf(back), hf)
        hf16 = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in hf.items())
        for sub, fname, writer in [("hf", "model.safetensors", "safetensors"), ("hf_bin", "pytorch_model.bin", "torch")]:
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            path = os.path.join(d, sub, fname)
            if writer == "safetensors":
                write_safetensors(path, hf16, metadata={"format": "pt"})
                assert same_tensors(read_safetensors(path), hf16)
            else:
                save_torch(hf16, path)
                assert same_tensors(torch.load(path), hf16)
            with open(os.path.join(d, sub, "config.json"), "w") as f:
                json.dump(hf_config(case, "float16"), f, indent=2)
                f.write("\n")
            files.append({"path": f"{sub}/{fname}", "config": f"{sub}/config.json", "format": writer,
                          "naming": "hf", "dtype": "float16"})
        back16 = {k: v.float() for k, v in hf_to_openai(read_safetensors(os.path.join(d, "hf", "model.safetensors"))).items()}
        assert same_tensors(back16, sd), "model.safetensors does not hold the reference weights"

    elif name == "fullvocab_tiny":
        half = openai_state_dict_file(m, sd, case, torch.float16)
        save_torch(half, os.path.join(d, "openai_state_dict_f16.pt"))
        files.append({"path": "openai_state_dict_f16.pt", "format": "torch_state_dict", "naming": "openai", "dtype": "float16"})
        extras["real_token_ids"] = real_token_ids(args.clip, args.vocab, case["ctx"])

    ref_tensors = reference_outputs(case, sd, extras)
    write_safetensors(os.path.join(d, "reference.safetensors"), ref_tensors,
                      metadata={"format": "pt", "generator": "tests/reference/gen_clip_fixtures.py"})
    man = manifest(case, sd, files)
    if "real_token_ids" in extras:
        man["real_texts"] = REAL_TEXTS
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(man, f, indent=2)
        f.write("\n")
    return sd, ref_tensors


def write_jit(m, sd, case, path):
    """A TorchScript archive like OpenAI's released files: model.py's CLIP traced (forward,
    encode_image, encode_text), then the tensors OpenAI's convert_weights turns to float16 (conv,
    linear and attention weights and biases, proj, text_projection) stored as float16, the rest
    (LayerNorms, embeddings, logit_scale) float32 - the mix OpenAI's fp16 checkpoints have."""
    half_names = {k for k, v in build_openai(m, sd, case, float32=False).state_dict().items() if v.dtype == torch.float16}
    model = build_openai(m, sd, case)
    g = torch.Generator().manual_seed(case["seed"] + 7)
    img = make_images(g, 1, case["res"])
    ids = make_token_ids(g, case)[:1]
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"forward": (img, ids), "encode_image": (img,), "encode_text": (ids,)},
                                        check_trace=False)
    for k, p in traced.named_parameters():
        if k in half_names:
            p.data = p.data.half()
    torch.jit.save(traced, path)
    loaded = torch.jit.load(path)
    stored = loaded.state_dict()
    assert {k for k, v in stored.items() if v.dtype == torch.float16} == half_names
    assert same_tensors({k: v.float() for k, v in stored.items()}, sd)
    return {"path": "openai_jit.pt", "format": "torchscript", "naming": "openai", "dtype": "float16+float32"}


# ---------------------------------------------------------------- cross-check

def _diff(a, b):
    a, b = a.double(), b.double()
    cos = F.cosine_similarity(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=-1).min().item()
    return (a - b).abs().max().item(), (a - b).abs().max().item() / a.abs().max().item(), cos


def cross_check(case, m, sd, t, d):
    """OpenAI's model.py (float32) against our reference (float32 and float64) on the same inputs."""
    spec = spec_of(case)
    model = build_openai(m, sd, case)
    rows = []
    captured = {}
    hooks = [blk.register_forward_hook(lambda mod, i, o, k=k: captured.__setitem__(k, o.permute(1, 0, 2)))
             for k, blk in enumerate(model.visual.transformer.resblocks)]
    with torch.no_grad():
        for label, img in [("images", t["input.images"]), ("images_alt", t["input.images_alt"])]:
            gh = img.shape[-1] // case["patch"]
            if label == "images_alt":  # model.py has no resizing: give it the resized table
                model.visual.positional_embedding.data = ref.resize_position_embedding(
                    sd["visual.positional_embedding"].double(), (gh, gh)).float()
            theirs = model.encode_image(img)
            theirs_tokens = model.visual.ln_post(captured[len(captured) - 1]) @ model.visual.proj
            r64 = ref.encode_image(sd, img, spec, torch.float64)
            r32 = ref.encode_image(sd, img, spec, torch.float32)
            rows.append((f"encode_image {label} {list(img.shape)}", "image_embeddings", list(theirs.shape),
                         _diff(r64["image_embeddings"], theirs), _diff(r32["image_embeddings"], theirs),
                         _diff(r64["image_embeddings"], r32["image_embeddings"])))
            rows.append((f"encode_image {label} {list(img.shape)}", "patch_tokens", list(theirs_tokens.shape),
                         _diff(r64["patch_tokens"], theirs_tokens), _diff(r32["patch_tokens"], theirs_tokens),
                         _diff(r64["patch_tokens"], r32["patch_tokens"])))
            for i in range(case["vl"]):
                rows.append((f"encode_image {label} {list(img.shape)}", f"layer_tokens.{i}", list(captured[i].shape),
                             _diff(r64["layer_tokens"][i], captured[i]), _diff(r32["layer_tokens"][i], captured[i]),
                             _diff(r64["layer_tokens"][i], r32["layer_tokens"][i])))
        for label in ["token_ids"] + (["real_token_ids"] if "input.real_token_ids" in t else []):
            ids = t["input." + label]
            theirs = model.encode_text(ids)
            r64 = ref.encode_text(sd, ids, spec, torch.float64)
            r32 = ref.encode_text(sd, ids, spec, torch.float32)
            rows.append((f"encode_text {label} {list(ids.shape)}", "text_embeddings", list(theirs.shape),
                         _diff(r64, theirs), _diff(r32, theirs), _diff(r64, r32)))
        if case["name"] == "p4_r28":  # the archive itself, run by TorchScript in float32
            jit = torch.jit.load(os.path.join(d, "openai_jit.pt")).float()
            jit_img = jit.encode_image(t["input.images"])
            jit_txt = jit.encode_text(t["input.token_ids"])
            rows.append(("openai_jit.pt encode_image", "image_embeddings", list(jit_img.shape),
                         _diff(t["out.image_embeddings"].double(), jit_img), None, None))
            rows.append(("openai_jit.pt encode_text", "text_embeddings", list(jit_txt.shape),
                         _diff(t["out.text_embeddings"].double(), jit_txt), None, None))
    for h in hooks:
        h.remove()
    # The stored reference is the float64 reference rounded once to float32.
    assert torch.equal(ref.encode_image(sd, t["input.images"], spec)["image_embeddings"].float(), t["out.image_embeddings"])
    return rows


def fmt(x):
    """max |a-b| / that over max |a| / 1 - (smallest row cosine)"""
    if x is None:
        return "-"
    return f"{x[0]:.1e} / {x[1]:.1e} / {max(1 - x[2], 0):.0e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="/work/ref/CLIP")
    ap.add_argument("--vocab", default="/work/shared/clip/bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--cross-check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # identical float32 results (for the checks) on any machine
    m = openai_model_module(args.clip)
    os.makedirs(OUT_DIR, exist_ok=True)
    for case in CASES:
        sd, t = write_case(case, m, args)
        print(f"{case['name']}: wrote {', '.join(sorted(os.listdir(os.path.join(OUT_DIR, case['name']))))}")
        if args.cross_check:
            print("| case | output | shape | ref64 vs OpenAI fp32 | ref32 vs OpenAI fp32 | ref64 vs ref32 |")
            print("|---|---|---|---|---|---|")
            for what, out, shape, a, b, c in cross_check(case, m, sd, t, os.path.join(OUT_DIR, case["name"])):
                print(f"| {case['name']} {what} | {out} | {shape} | {fmt(a)} | {fmt(b)} | {fmt(c)} |")


if __name__ == "__main__":
    main()
