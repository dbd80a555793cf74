#!/usr/bin/python3
"""focuspatch's own reference CLIP forward pass (ViT image tower + causal text tower) in PyTorch.

Library module, imported by gen_clip_fixtures.py; run it directly for a quick self-test:

    /usr/bin/python3 tests/reference/clip_reference.py

Written from the architecture, not from OpenAI's code, and deliberately plain: the patch embedding
is a reshape and a matrix product (no conv2d), attention is written out per head, LayerNorm is
mean/variance by hand. It reads a state dict in OpenAI's naming:

  visual.conv1.weight [W,3,P,P] (no bias)   visual.class_embedding [W]
  visual.positional_embedding [1+g*g, W]    visual.ln_pre.{weight,bias}
  visual.transformer.resblocks.N.{ln_1, attn.in_proj_weight [3W,W], attn.in_proj_bias [3W],
                                  attn.out_proj.{weight,bias}, ln_2, mlp.c_fc.*, mlp.c_proj.*}
  visual.ln_post.{weight,bias}              visual.proj [W,D]
  token_embedding.weight [V,Wt]             positional_embedding [C,Wt]
  transformer.resblocks.N.* (as above)      ln_final.{weight,bias}
  text_projection [Wt,D]                    logit_scale []

What the weights cannot say comes in `ModelSpec`: heads per tower, the MLP activation (QuickGELU
x*sigmoid(1.702x) as OpenAI's models, or exact erf GELU as most open_clip/HF models) and the
LayerNorm epsilon. Every computation runs in the dtype the caller picks (float64 for fixtures, so
the reference carries no float32 rounding of its own).

Conventions the C++ engine must match:
  - blocks are pre-LN: x += attn(ln_1(x)); x += mlp(ln_2(x)); attention scale 1/sqrt(head_dim);
  - the text tower is causal (token t sees 0..t) and is pooled after ln_final at the EOT position,
    which for token ids is the FIRST position holding the row's largest id;
  - image embedding = ln_post(CLS) @ proj; patch tokens = ln_post(every token) @ proj, CLS first;
    layer_tokens[i] = the raw residual stream after resblock i (0-based), before any LayerNorm;
  - projected_layers[i] = ln_post(layer_tokens[i]) @ proj, every token (encode_image_paths);
  - CLIP Surgery's v-v path through the last n blocks (encode_image_paths, vv_tokens): a second
    stream forked from the main one where the first of those blocks begins, plus, per block,
    out_proj(softmax(v v^T / sqrt(head_dim)) v) with v from ln_1 of the MAIN stream and no MLP;
    its CLS replaced by the main stream's; then ln_post and proj on every token;
  - another input size uses a position embedding whose g*g grid part is resized bicubically to the
    new grid (PyTorch's bicubic, A = -0.75, align_corners=False, no antialias, edge samples
    clamped), the CLS row kept as is. `bicubic_resize_reference` spells that out.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelSpec:
    vision_heads: int
    text_heads: int
    activation: str = "quick_gelu"  # or "gelu" (exact, erf)
    layer_norm_eps: float = 1e-5


def as_dtype(state_dict, dtype=torch.float64):
    """Floating tensors converted to `dtype` (float16/bfloat16 values upcast exactly)."""
    return {k: v.detach().to(dtype) for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()}


def activation(x, name):
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    raise ValueError(f"unknown activation {name!r}")


def layer_norm(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, as LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def attention(x, sd, prefix, heads, causal):
    """Multi-head self-attention over x [N,T,W] with the packed q/k/v projection."""
    n, t, w = x.shape
    assert w % heads == 0, f"width {w} not divisible by {heads} heads"
    hd = w // heads
    qkv = x @ sd[prefix + "in_proj_weight"].T + sd[prefix + "in_proj_bias"]
    q, k, v = (qkv[..., i * w:(i + 1) * w].reshape(n, t, heads, hd).transpose(1, 2) for i in range(3))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [N,H,T,T]
    if causal:
        future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(n, t, w)
    return out @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def resblock(x, sd, prefix, heads, act, eps, causal):
    h = layer_norm(x, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps)
    x = x + attention(h, sd, prefix + "attn.", heads, causal)
    h = layer_norm(x, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps)
    h = activation(h @ sd[prefix + "mlp.c_fc.weight"].T + sd[prefix + "mlp.c_fc.bias"], act)
    h = h @ sd[prefix + "mlp.c_proj.weight"].T + sd[prefix + "mlp.c_proj.bias"]
    return x + h


def count_blocks(sd, prefix):
    n = 0
    while f"{prefix}{n}.attn.in_proj_weight" in sd:
        n += 1
    return n


# ---------------------------------------------------------------- position embedding resizing

def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution weights for the 4 taps at offsets -1,0,1,2 from floor(src)."""
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_resize_reference(img, out_h, out_w):
    """Bicubic resize of img [C,H,W], written out: align_corners=False source coordinate
    (dst + 0.5) * in/out - 0.5, A = -0.75, taps outside the image clamped to the edge, no
    antialiasing. Equal to F.interpolate(mode='bicubic', align_corners=False) (checked by the
    generator); the slow loops are fine for position-embedding grids."""
    c, h, w = img.shape
    out = torch.zeros((c, out_h, out_w), dtype=img.dtype)

    def taps(dst, n_in, n_out):
        src = (dst + 0.5) * (n_in / n_out) - 0.5
        i0 = math.floor(src)
        ws = _cubic_weights(src - i0)
        return [(min(max(i0 - 1 + k, 0), n_in - 1), ws[k]) for k in range(4)]

    for oy in range(out_h):
        ty = taps(oy, h, out_h)
        for ox in range(out_w):
            tx = taps(ox, w, out_w)
            acc = torch.zeros(c, dtype=img.dtype)
            for iy, wy in ty:
                for ix, wx in tx:
                    acc = acc + (wy * wx) * img[:, iy, ix]
            out[:, oy, ox] = acc
    return out


def resize_position_embedding(pos, grid_hw):
    """pos [1+g*g, W] -> [1+gh*gw, W]: CLS row kept, grid rows resized bicubically (row-major
    grid, as the patch order of the vision tower)."""
    tokens, width = pos.shape
    g = round(math.sqrt(tokens - 1))
    assert g * g + 1 == tokens, f"position embedding has {tokens} rows, not 1 + a square grid"
    gh, gw = grid_hw
    if (gh, gw) == (g, g):
        return pos
    grid = pos[1:].reshape(1, g, g, width).permute(0, 3, 1, 2)  # [1,W,g,g]
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, width)
    return torch.cat([pos[:1], grid], dim=0)


# ---------------------------------------------------------------- towers

def embed_image(sd, images, spec, dtype=torch.float64):
    """The tokens entering the first resblock: patch embedding, CLS, position embedding, ln_pre.
    sd already in `dtype` (see as_dtype)."""
    x = images.to(dtype)
    conv = sd["visual.conv1.weight"]
    width, _, p, p2 = conv.shape
    assert p == p2, "non-square patches"
    n, c, h, w = x.shape
    assert c == 3 and h % p == 0 and w % p == 0, f"image {h}x{w} is not a multiple of patch {p}"
    gh, gw = h // p, w // p
    # Patch embedding as a matrix product: each patch flattened in (channel, row, col) order.
    patches = x.reshape(n, 3, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, 3 * p * p)
    tokens = patches @ conv.reshape(width, 3 * p * p).T
    cls = sd["visual.class_embedding"].reshape(1, 1, width).expand(n, 1, width)
    x = torch.cat([cls, tokens], dim=1)
    x = x + resize_position_embedding(sd["visual.positional_embedding"], (gh, gw))
    eps = spec.layer_norm_eps
    return layer_norm(x, sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps)


def encode_image(sd, images, spec, dtype=torch.float64):
    """images [N,3,H,W] (already CLIP-normalised), H and W multiples of the patch size.
    Returns dict(image_embeddings [N,D], patch_tokens [N,T,D], layer_tokens [list of N,T,W])."""
    sd = as_dtype(sd, dtype)
    x = embed_image(sd, images, spec, dtype)
    eps = spec.layer_norm_eps
    layers = []
    for i in range(count_blocks(sd, "visual.transformer.resblocks.")):
        x = resblock(x, sd, f"visual.transformer.resblocks.{i}.", spec.vision_heads, spec.activation, eps, causal=False)
        layers.append(x)
    post = layer_norm(x, sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps) @ sd["visual.proj"]
    return {"image_embeddings": post[:, 0], "patch_tokens": post, "layer_tokens": layers}


# ---------------------------------------------------------------- joint-space patch features

def project(x, sd, eps):
    """ln_post then the projection into the joint space, every token."""
    return layer_norm(x, sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps) @ sd["visual.proj"]


def surgery_attention(h, sd, prefix, heads):
    """One attention layer read two ways from the same packed projection of h [N,T,W]:
    (ordinary q-k attention, CLIP Surgery's v-v attention), both through out_proj. The v-v
    weights are softmax(v v^T / sqrt(head_dim)) per head: the values stand in for queries and keys."""
    n, t, w = h.shape
    hd = w // heads
    qkv = h @ sd[prefix + "in_proj_weight"].T + sd[prefix + "in_proj_bias"]
    q, k, v = (qkv[..., i * w:(i + 1) * w].reshape(n, t, heads, hd).transpose(1, 2) for i in range(3))

    def attend(a, b):
        probs = torch.softmax((a @ b.transpose(-1, -2)) / math.sqrt(hd), dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(n, t, w)
        return out @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]

    return attend(q, k), attend(v, v)


def encode_image_paths(sd, images, spec, surgery_blocks, dtype=torch.float64):
    """Patch features in the joint space, as CLIP-based anomaly detectors read them.

    projected_layers[i]: the residual stream after resblock i through ln_post and proj (every
    token, CLS first). vv_tokens: CLIP Surgery's dual path through the last `surgery_blocks`
    blocks (0 = none, vv_tokens None). Where the first of them begins, the stream forks: the
    original path runs the blocks unchanged; the new path starts from the same tokens and, per
    block, adds the v-v attention of ln_1 of the ORIGINAL path's tokens (no MLP). At the end the
    new path's CLS is replaced by the original's, and every token goes through ln_post and proj.
    Returns dict(projected_layers [list of N,T,D], patch_tokens [N,T,D], vv_tokens [N,T,D] or None)."""
    sd = as_dtype(sd, dtype)
    eps = spec.layer_norm_eps
    x = embed_image(sd, images, spec, dtype)
    blocks = count_blocks(sd, "visual.transformer.resblocks.")
    assert 0 <= surgery_blocks <= blocks
    fork = blocks - surgery_blocks
    new_path = None
    projected = []
    for i in range(blocks):
        prefix = f"visual.transformer.resblocks.{i}."
        if i < fork:
            x = resblock(x, sd, prefix, spec.vision_heads, spec.activation, eps, causal=False)
        else:
            if new_path is None:
                new_path = x.clone()
            h = layer_norm(x, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps)
            qk, vv = surgery_attention(h, sd, prefix + "attn.", spec.vision_heads)
            new_path = new_path + vv
            x = x + qk
            h = layer_norm(x, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps)
            h = activation(h @ sd[prefix + "mlp.c_fc.weight"].T + sd[prefix + "mlp.c_fc.bias"], spec.activation)
            x = x + (h @ sd[prefix + "mlp.c_proj.weight"].T + sd[prefix + "mlp.c_proj.bias"])
        projected.append(project(x, sd, eps))
    vv_tokens = None
    if new_path is not None:
        new_path = torch.cat([x[:, :1], new_path[:, 1:]], dim=1)
        vv_tokens = project(new_path, sd, eps)
    return {"projected_layers": projected, "patch_tokens": project(x, sd, eps), "vv_tokens": vv_tokens}


def eot_positions(token_ids):
    """First position of each row's largest id (CLIP's EOT id is the largest in its vocabulary)."""
    best = token_ids.max(dim=-1, keepdim=True).values
    hits = (token_ids == best).to(torch.int64)
    idx = torch.arange(token_ids.shape[-1], dtype=torch.int64)
    # the first hit has the smallest index: pick it without relying on argmax's tie rule
    return torch.where(hits.bool(), idx, torch.full_like(idx, token_ids.shape[-1])).min(dim=-1).values


def encode_text_embeddings(sd, token_embeddings, eot, spec, dtype=torch.float64):
    """token_embeddings [N,C,Wt] (before the positional embedding is added; C = the context
    length), eot [N] the position to pool at. Returns [N,D]."""
    sd = as_dtype(sd, dtype)
    x = token_embeddings.to(dtype) + sd["positional_embedding"]
    eps = spec.layer_norm_eps
    for i in range(count_blocks(sd, "transformer.resblocks.")):
        x = resblock(x, sd, f"transformer.resblocks.{i}.", spec.text_heads, spec.activation, eps, causal=True)
    x = layer_norm(x, sd["ln_final.weight"], sd["ln_final.bias"], eps)
    pooled = x[torch.arange(x.shape[0]), eot.to(torch.int64)]
    return pooled @ sd["text_projection"]


def encode_text(sd, token_ids, spec, dtype=torch.float64):
    """token_ids [N,C] int64, zero padded. Returns [N,D]."""
    emb = sd["token_embedding.weight"].detach().to(dtype)[token_ids]
    return encode_text_embeddings(sd, emb, eot_positions(token_ids), spec, dtype)


def _self_test():
    torch.manual_seed(0)
    img = torch.randn(5, 3, 4)
    for oh, ow in [(5, 6), (7, 7), (2, 3), (4, 4)]:
        ours = bicubic_resize_reference(img.double(), oh, ow)
        theirs = F.interpolate(img.double()[None], size=(oh, ow), mode="bicubic", align_corners=False)[0]
        assert torch.allclose(ours, theirs, atol=1e-12), (oh, ow, (ours - theirs).abs().max())
    ids = torch.tensor([[5, 9, 9, 1, 0], [9, 1, 2, 3, 4]])
    assert eot_positions(ids).tolist() == [1, 0]
    print("clip_reference self-test ok")


if __name__ == "__main__":
    _self_test()
