#!/usr/bin/python3
"""Generates the joint-space patch feature fixtures: tests/fixtures/clip/<case>/surgery.safetensors
for the cases in CASES, from clip_reference.encode_image_paths.

Run from the project root with Debian's Python (torch 1.13), after gen_clip_fixtures.py:

    /usr/bin/python3 tests/reference/gen_surgery_fixtures.py

The weights are rebuilt with gen_clip_fixtures.make_weights (seeded, so they are the values the
case's checkpoint files hold; checked by reproducing the stored out.patch_tokens bit for bit) and
the images are the case's input.images from reference.safetensors. Computed in float64, stored
float32; a rerun writes identical bytes. Prints how far plausible mistakes in the value-value path
move its output (the table in tests/reference/README.md).
"""
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_reference as ref  # noqa: E402
import gen_clip_fixtures as gen  # noqa: E402

CASES = ["p8_r32", "p4_r28", "p14_r42_hf"]  # float32 weights; float16 weights (OpenAI jit); float16, HF naming, GELU


def rel_max(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def mistaken_vv(sd, images, spec, blocks, *, mlp=False, zeros=False, own_qkv=False, qk=False, own_cls=False):
    """The v-v path with one plausible mistake, to show the fixtures tell it apart. Deliberately a
    second, flag-driven spelling of encode_image_paths (float64)."""
    sd = ref.as_dtype(sd)
    eps = spec.layer_norm_eps
    x = ref.embed_image(sd, images, spec)
    n_blocks = ref.count_blocks(sd, "visual.transformer.resblocks.")
    y = None
    for i in range(n_blocks):
        prefix = f"visual.transformer.resblocks.{i}."
        if i == n_blocks - blocks:
            y = torch.zeros_like(x) if zeros else x.clone()
        if y is not None:
            src = y if own_qkv else x
            h = ref.layer_norm(src, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps)
            qk_out, vv_out = ref.surgery_attention(h, sd, prefix + "attn.", spec.vision_heads)
            y = y + (qk_out if qk else vv_out)
            if mlp:
                h = ref.layer_norm(y, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps)
                h = ref.activation(h @ sd[prefix + "mlp.c_fc.weight"].T + sd[prefix + "mlp.c_fc.bias"], spec.activation)
                y = y + (h @ sd[prefix + "mlp.c_proj.weight"].T + sd[prefix + "mlp.c_proj.bias"])
        x = ref.resblock(x, sd, prefix, spec.vision_heads, spec.activation, eps, causal=False)
    if not own_cls:
        y = torch.cat([x[:, :1], y[:, 1:]], dim=1)
    return ref.project(y, sd, eps)


MISTAKES = [("MLP on the v-v path too", dict(mlp=True)), ("v-v path started from zeros", dict(zeros=True)),
            ("q/k/v from the v-v path's own stream", dict(own_qkv=True)), ("q-k instead of v-v attention", dict(qk=True)),
            ("v-v path keeps its own CLS", dict(own_cls=True))]


def write_case(name):
    case = next(c for c in gen.CASES if c["name"] == name)
    spec = gen.spec_of(case)
    d = os.path.join(gen.OUT_DIR, name)
    sd = gen.make_weights(case)
    stored = gen.read_safetensors(os.path.join(d, "reference.safetensors"))
    images = stored["input.images"]
    blocks = case["vl"]

    paths = {n: ref.encode_image_paths(sd, images, spec, n) for n in range(blocks + 1)}
    plain = paths[0]
    # Same weights and images as the case's reference, and the same main path.
    assert torch.equal(plain["patch_tokens"].float(), stored["out.patch_tokens"]), name
    for i in range(blocks):
        layer = stored[f"out.layer_tokens.{i}"].double()
        assert rel_max(ref.project(layer, ref.as_dtype(sd), spec.layer_norm_eps), plain["projected_layers"][i]) < 1e-5
    assert torch.equal(plain["projected_layers"][-1], plain["patch_tokens"])
    t = collections.OrderedDict()  # the images stay in reference.safetensors only
    for i, p in enumerate(plain["projected_layers"]):
        t[f"out.projected_layers.{i}"] = p
    for n in range(1, blocks + 1):
        out = paths[n]
        # The fork leaves the main path alone; the CLS is the main one; the patches are not.
        assert torch.equal(out["patch_tokens"], plain["patch_tokens"])
        assert all(torch.equal(a, b) for a, b in zip(out["projected_layers"], plain["projected_layers"]))
        assert torch.equal(out["vv_tokens"][:, 0], plain["patch_tokens"][:, 0])
        assert rel_max(out["vv_tokens"][:, 1:], plain["patch_tokens"][:, 1:]) > 0.05
        t[f"out.vv_tokens.{n}"] = out["vv_tokens"]
    for i in range(1, blocks):
        assert rel_max(plain["projected_layers"][i - 1], plain["projected_layers"][i]) > 0.05

    rows = []
    for n in range(1, blocks + 1):
        good = paths[n]["vv_tokens"]
        assert rel_max(mistaken_vv(sd, images, spec, n), good) < 1e-12  # the second spelling agrees when right
        rows.append((n, [rel_max(mistaken_vv(sd, images, spec, n, **flags), good) for _, flags in MISTAKES]))

    t = collections.OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in t.items())
    gen.write_safetensors(os.path.join(d, "surgery.safetensors"), t,
                          metadata={"format": "pt", "generator": "tests/reference/gen_surgery_fixtures.py"})
    return rows


def main():
    torch.set_num_threads(1)
    print("| case | v-v blocks | " + " | ".join(label for label, _ in MISTAKES) + " |")
    print("|---|---|" + "---|" * len(MISTAKES))
    for name in CASES:
        for n, errs in write_case(name):
            print(f"| {name} | {n} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")


if __name__ == "__main__":
    main()
