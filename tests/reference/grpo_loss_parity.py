#!/usr/bin/python3
"""GRPO loss parity (SPEC-model.md §7, §10): troupe's FP32 loss and dlogits
(model/grpo_loss.h, via grpo_loss_dump) against PyTorch autograd in FP32 on the same inputs.

  grpo_loss_parity.py --dump build/tests/reference/grpo_loss_dump --seed 1

The reference is written here from the SPEC's formula, independently of troupe's code:
  loss = −mean_g mean_{t∈g} [min(ρA, clip(ρ, 1−ε, 1+ε)A) − β(q − log q − 1)],
  ρ = exp(lp − lp_old), q = exp(lp_ref − lp), lp = log_softmax(logits)[token].
Holds max |ours − ref| / max(|ref|, 1e-6) ≤ 1e-4 for the loss and every dlogit; exits 1
otherwise, and also when no token took the clipped branch (the case would not check it).
"""
import argparse
import json
import subprocess
import sys

import torch

RTOL, ATOL_FLOOR = 1e-4, 1e-6


def reference(case):
    logits = torch.tensor(case["logits"], dtype=torch.float32).reshape(-1, case["V"])
    logits.requires_grad_(True)
    tok = torch.tensor(case["token"], dtype=torch.long)
    comp = torch.tensor(case["completion"], dtype=torch.long)
    adv = torch.tensor(case["advantage"], dtype=torch.float32)[comp]
    lp_old = torch.tensor(case["logp_old"], dtype=torch.float32)
    lp_ref = torch.tensor(case["logp_ref"], dtype=torch.float32)
    eps, beta = case["clip_eps"], case["kl_beta"]
    lp = torch.log_softmax(logits, dim=-1).gather(1, tok[:, None])[:, 0]
    rho = torch.exp(lp - lp_old)
    surrogate = torch.min(rho * adv, torch.clamp(rho, 1 - eps, 1 + eps) * adv)
    log_q = lp_ref - lp
    kl = torch.exp(log_q) - log_q - 1
    per_token = surrogate - beta * kl
    G = case["G"]
    per_completion = torch.zeros(G).index_add(0, comp, per_token)
    counts = torch.zeros(G).index_add(0, comp, torch.ones_like(per_token))
    loss = -(per_completion / counts).mean()
    loss.backward()
    return loss.detach(), logits.grad


def worst(ours, ref):
    ours, ref = torch.as_tensor(ours).reshape(-1), ref.reshape(-1)
    err = (ours - ref).abs() / torch.clamp(ref.abs(), min=ATOL_FLOOR)
    i = int(torch.argmax(err))
    return float(err[i]), i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = subprocess.run([args.dump, str(args.seed)], stdout=subprocess.PIPE, check=True, text=True)
    case = json.loads(out.stdout)
    loss, dlogits = reference(case)
    e_loss, _ = worst(torch.tensor([case["loss"]]), loss.reshape(1))
    e_grad, i = worst(torch.tensor(case["dlogits"], dtype=torch.float32), dlogits)
    n = len(case["token"])
    print(f"grpo loss parity (seed {args.seed}): {n} tokens, {case['G']} completions, "
          f"V {case['V']}, clipped fraction {case['clipped_fraction']:.2f}")
    print(f"  loss    ours {case['loss']:.9g} ref {float(loss):.9g}  rel err {e_loss:.2e}")
    print(f"  dlogits worst rel err {e_grad:.2e} at token {i // case['V']} id {i % case['V']}")
    failed = []
    if e_loss > RTOL:
        failed.append(f"loss differs by {e_loss:.2e} > {RTOL}")
    if e_grad > RTOL:
        failed.append(f"dlogits differ by {e_grad:.2e} > {RTOL}")
    if not 0 < case["clipped_fraction"] < 1:
        failed.append(f"clipped fraction {case['clipped_fraction']}: both branches must occur")
    if failed:
        sys.exit("grpo_loss_parity: " + "; ".join(failed))
    print("grpo_loss_parity: ok")


if __name__ == "__main__":
    main()
