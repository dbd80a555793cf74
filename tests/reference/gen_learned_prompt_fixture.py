"""Writes the learned-prompt checkpoints of tests/fixtures/learned_prompts/ (a few kB each).

Run from the project root:  /usr/bin/python3 tests/reference/gen_learned_prompt_fixture.py

Every context value is learned_value(seed, p, t, d) = ((13 seed + 31 p + 7 t + 3 d) mod 17 - 8) / 32,
exactly representable in float16 and bfloat16, so tests/test_learned_prompts.cpp recomputes the
expected vectors from this formula instead of reading them back with the code under test. Width 32
is the text width of tests/fixtures/clip/p8_r32.

  promptad_like.pt     a PromptAD model state dict (tensor names of PromptAD/model.py):
                       prompt_learner.normal_ctx [3, 2, 32] seed 1, prompt_learner.abnormal_ctx
                       [4, 1, 32] seed 2, float32, plus buffers and galleries that are not context
  anomalyclip_like.pt  AnomalyCLIP's {"prompt_learner": state_dict}: ctx_pos [1, 1, 3, 32] seed 3,
                       ctx_neg [1, 1, 3, 32] seed 4, float16, plus compound_prompts_text.0 [4, 32]
  custom_names.pt      names no convention knows: learner.good [2, 32] seed 5 (float32),
                       learner.bad [2, 2, 32] seed 6 (bfloat16), and an unrelated weight [5, 5]
"""
import collections
import os

import torch

WIDTH = 32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "learned_prompts")


def learned(seed, *shape, dtype=torch.float32):
    """[..., n_ctx, W] with the documented formula; leading dimensions are flattened into p."""
    n_ctx, width = shape[-2], shape[-1]
    prompts = 1
    for s in shape[:-2]:
        prompts *= s
    p = torch.arange(prompts).reshape(-1, 1, 1)
    t = torch.arange(n_ctx).reshape(1, -1, 1)
    d = torch.arange(width).reshape(1, 1, -1)
    values = ((13 * seed + 31 * p + 7 * t + 3 * d) % 17 - 8).to(torch.float64) / 32
    out = values.reshape(shape).to(dtype)
    assert torch.equal(out.to(torch.float64), values.reshape(shape)), "not exactly representable"
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    promptad = collections.OrderedDict([
        ("feature_gallery1", torch.zeros(4, WIDTH)),
        ("text_features", torch.ones(2, WIDTH)),
        ("prompt_learner.normal_ctx", learned(1, 3, 2, WIDTH)),
        ("prompt_learner.abnormal_ctx", learned(2, 4, 1, WIDTH)),
        ("prompt_learner.normal_token_prefix", torch.zeros(3, 1, WIDTH)),
    ])
    torch.save(promptad, os.path.join(OUT, "promptad_like.pt"))

    anomalyclip = {"prompt_learner": collections.OrderedDict([
        ("ctx_pos", learned(3, 1, 1, 3, WIDTH, dtype=torch.float16)),
        ("ctx_neg", learned(4, 1, 1, 3, WIDTH, dtype=torch.float16)),
        ("compound_prompts_text.0", torch.zeros(4, WIDTH, dtype=torch.float16)),
    ])}
    torch.save(anomalyclip, os.path.join(OUT, "anomalyclip_like.pt"))

    custom = collections.OrderedDict([
        ("learner.good", learned(5, 2, WIDTH)),
        ("learner.bad", learned(6, 2, 2, WIDTH, dtype=torch.bfloat16)),
        ("head.weight", torch.ones(5, 5)),
    ])
    torch.save(custom, os.path.join(OUT, "custom_names.pt"))

    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
