#!/usr/bin/python3
"""PyTorch reference for troupe's V4-mini model (SPEC-model.md §1-3, §9, §11).

Run with /usr/bin/python3 (torch 1.13, numpy). Subcommands:

  grads       --weights W.safetensors --batch B.safetensors --out G.safetensors
  eval        --weights W.safetensors --text FILE [--chunk-rows 32] [--dtype f64|f32]
  train-bench --config configs/tiny.toml [--set section.key=value ...] --steps N --threads K
  selftest    [--verbose]

See README.md in this directory for the conventions. The same forward code serves the
FP64 reference (`grads`, `eval`: deterministic routing, ties to the lower index) and the
FP32 eager benchmark peer (`train-bench`: torch.topk routing).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

BOS, EOS, VOCAB = 256, 257, 258

# ----------------------------------------------------------------------------- config

MODEL_DEFAULTS = dict(  # model/config.h ModelConfig
    vocab_size=258, seq_len=128, d_model=128, n_layers=4, n_heads=4, q_lora_rank=64,
    kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    rope_theta=10000.0, rms_norm_eps=1e-6, hc_mult=4, sinkhorn_iters=20, first_k_dense=1,
    dense_inter=384, n_routed_experts=8, n_shared_experts=1, moe_inter=96, top_k=2,
    n_group=4, topk_group=2, routed_scaling=1.0, bias_update_speed=0.001,
    seq_aux_alpha=0.0001, mtp_depth=1, mtp_lambda=0.3, engram_layers=[],
    engram_orders=[2, 3], engram_heads=4, engram_head_dim=16, engram_table_rows=10007,
    engram_conv_kernel=4, engram_conv_dilation=3, residual="mhc", ffn="moe",
)
TRAIN_DEFAULTS = dict(  # model/config.h TrainConfig
    steps=600, batch_size=16, micro_batch_rows=2, lr=3e-3, warmup_steps=50,
    min_lr_ratio=0.1, weight_decay=0.1, grad_clip=1.0, seed=1234, eval_every=100, threads=0,
)
OPTIMIZER_DEFAULTS = dict(name="adamw", beta1=0.9, beta2=0.95, eps=1e-8)


class Config:
    """Model config: attribute access over MODEL_DEFAULTS overridden by the given dict."""

    def __init__(self, d=None):
        self.__dict__.update(MODEL_DEFAULTS)
        self.seed = 0
        for k, v in (d or {}).items():
            setattr(self, k, v)
        if self.mtp_depth not in (0, 1):
            raise SystemExit(f"mtp_depth={self.mtp_depth}: only 0 or 1 is supported")
        if self.residual not in ("mhc", "plain"):
            raise SystemExit(f"residual={self.residual!r}: expected mhc or plain")
        if self.ffn not in ("moe", "dense"):
            raise SystemExit(f"ffn={self.ffn!r}: expected moe or dense")

    def is_moe_layer(self, l):
        return self.ffn == "moe" and l >= self.first_k_dense

    def to_dict(self):
        return dict(self.__dict__)


def config_from_metadata(meta):
    if "troupe_config" not in meta:
        raise SystemExit("weights file has no troupe_config metadata")
    j = json.loads(meta["troupe_config"])
    if isinstance(j.get("model"), dict):  # tolerate a nested {model:{..}, train:{..}} form
        d = dict(j["model"])
        seed = j.get("seed", j.get("train", {}).get("seed", 0) if isinstance(j.get("train"), dict) else 0)
        d["seed"] = seed
    else:
        d = dict(j)
    return Config(d)


# ------------------------------------------------------------------------ parameters

def param_table(cfg):
    """[(name, shape, init, value)] in model/params.cc order. init: normal|ones|zeros|const."""
    C, n = cfg.d_model, cfg.hc_mult
    t = []

    def matrix(name, r, c):
        t.append((name, (r, c), "normal", 0.02))

    def norm(name, d):
        t.append((name, (d,), "ones", 1.0))

    def swiglu(p, inter):
        matrix(p + "gate_proj.weight", inter, C)
        matrix(p + "up_proj.weight", inter, C)
        matrix(p + "down_proj.weight", C, inter)

    def hc(p):
        t.append((p + "phi_pre", (n, n * C), "normal", 0.02))
        t.append((p + "phi_post", (n, n * C), "normal", 0.02))
        t.append((p + "phi_res", (n * n, n * C), "normal", 0.02))
        for a in ("alpha_pre", "alpha_post", "alpha_res"):
            t.append((p + a, (1,), "const", 0.01))
        t.append((p + "b_pre", (n,), "zeros", 0.0))
        t.append((p + "b_post", (n,), "zeros", 0.0))
        t.append((p + "b_res", (n, n), "zeros", 0.0))

    def mla(p):
        H, dq = cfg.n_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        matrix(p + "q_a_proj.weight", cfg.q_lora_rank, C)
        norm(p + "q_a_layernorm.weight", cfg.q_lora_rank)
        matrix(p + "q_b_proj.weight", H * dq, cfg.q_lora_rank)
        matrix(p + "kv_a_proj_with_mqa.weight", cfg.kv_lora_rank + cfg.qk_rope_head_dim, C)
        norm(p + "kv_a_layernorm.weight", cfg.kv_lora_rank)
        matrix(p + "kv_b_proj.weight", H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
        matrix(p + "o_proj.weight", C, H * cfg.v_head_dim)

    def engram(p):
        S, d_mem = (n if cfg.residual == "mhc" else 1), engram_d_mem(cfg)
        for m in range(S):
            matrix(p + f"w_k.{m}", C, d_mem)
        matrix(p + "w_v", C, d_mem)
        for nm in ("norm_q", "norm_k", "norm_c"):
            for m in range(S):
                norm(p + f"{nm}.{m}", C)
        t.append((p + "conv", (S * C, 1, cfg.engram_conv_kernel), "zeros", 0.0))

    t.append(("model.embed_tokens.weight", (cfg.vocab_size, C), "normal", 0.02))
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        if l in cfg.engram_layers:
            engram(p + "engram.")
        if cfg.residual == "mhc":
            hc(p + "attn_hc.")
        norm(p + "input_layernorm.weight", C)
        mla(p + "self_attn.")
        if cfg.residual == "mhc":
            hc(p + "mlp_hc.")
        norm(p + "post_attention_layernorm.weight", C)
        if cfg.is_moe_layer(l):
            t.append((p + "mlp.gate.weight", (cfg.n_routed_experts, C), "normal", 0.02))
            t.append((p + "mlp.gate.e_score_correction_bias", (cfg.n_routed_experts,), "zeros", 0.0))
            for e in range(cfg.n_routed_experts):
                swiglu(p + f"mlp.experts.{e}.", cfg.moe_inter)
            if cfg.n_shared_experts > 0:
                swiglu(p + "mlp.shared_experts.", cfg.n_shared_experts * cfg.moe_inter)
        else:
            swiglu(p + "mlp.", cfg.dense_inter)
    norm("model.norm.weight", C)
    t.append(("lm_head.weight", (cfg.vocab_size, C), "normal", 0.02))
    if cfg.mtp_depth > 0:
        norm("mtp.norm_h.weight", C)
        norm("mtp.norm_e.weight", C)
        matrix("mtp.proj.weight", C, 2 * C)
        norm("mtp.block.input_layernorm.weight", C)
        mla("mtp.block.self_attn.")
        norm("mtp.block.post_attention_layernorm.weight", C)
        swiglu("mtp.block.mlp.", cfg.dense_inter)
    for name, rows, dim in engram_tables(cfg):  # outside troupe's dense buffer, same file
        t.append((name, (rows, dim), "normal", 0.02))
    return t


# ---------------------------------------------------------------------------- Engram §4

U64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & U64
    return x ^ (x >> 31)


def engram_multiplier(seed, l, k):
    return 2 * (splitmix64((seed + 10007 * l + k) & U64) % (1 << 31)) + 1


def engram_compress(x):
    if 65 <= x <= 90:
        return x + 32
    if x in (9, 10, 11, 12, 13, 32):
        return 32
    return x


def is_prime(x):
    return x >= 2 and all(x % d for d in range(2, int(math.isqrt(x)) + 1))


def engram_tables(cfg):
    """[(name, rows, dim)] in (layer, order, head) order; rows: distinct primes from engram_table_rows."""
    out, nxt = [], cfg.engram_table_rows
    for l in cfg.engram_layers:
        for order in cfg.engram_orders:
            for j in range(cfg.engram_heads):
                while not is_prime(nxt):
                    nxt += 1
                out.append((f"model.layers.{l}.engram.tables.{order}.{j}", nxt, cfg.engram_head_dim))
                nxt += 1
    return out


def engram_d_mem(cfg):
    return len(cfg.engram_orders) * cfg.engram_heads * cfg.engram_head_dim


def doc_first(doc, R, T):
    """doc (R, T) document ids or None -> (R, T) long: the offset in its row of each token's
    document start (0 without doc; documents are contiguous runs of one id)."""
    if doc is None:
        return torch.zeros(R, T, dtype=torch.long)
    first = torch.zeros(R, T, dtype=torch.long)
    for r in range(R):
        start = 0
        for t in range(1, T):
            if int(doc[r, t]) != int(doc[r, t - 1]):
                start = t
            first[r, t] = start
    return first


def engram_row_ids(cfg, l, inputs, first=None):
    """inputs (R, T) -> {table name: (R, T) int64 row ids} for layer l. A row is a document
    (or, with `first` from doc_first, each run of one document id is): positions before the
    document start read BOS (256)."""
    R, T = inputs.shape
    fl = [[0] * T for _ in range(R)] if first is None else first.tolist()
    mult = [engram_multiplier(cfg.seed, l, k) for k in range(max(cfg.engram_orders))]
    toks = [[engram_compress(int(x)) for x in row] for row in inputs.tolist()]
    tabs = {(int(n.split(".")[-2]), int(n.split(".")[-1])): (n, rows)
            for n, rows, _ in engram_tables(cfg) if n.startswith(f"model.layers.{l}.")}
    out = {}
    for order in cfg.engram_orders:
        mix = [[0] * T for _ in range(R)]
        for r in range(R):
            for t in range(T):
                x = 0
                for k in range(order):
                    x ^= (toks[r][t - k] if t - k >= fl[r][t] else BOS) * mult[k]
                mix[r][t] = x & U64
        for j in range(cfg.engram_heads):
            name, rows = tabs[(order, j)]
            out[name] = torch.tensor([[x % rows for x in row] for row in mix], dtype=torch.long)
    return out


def engram(P, l, cfg, inputs, X, first=None):
    """X (R, T, S, C) streams at the block input -> X + Y (SPEC §4, §11). With `first`
    (doc_first), hashes and conv stop at the document start as they do at the row start."""
    R, T, S, C = X.shape
    p = f"model.layers.{l}.engram."
    ids = engram_row_ids(cfg, l, inputs, first)
    e = torch.cat([P[n][ids[n]] for n, _, _ in engram_tables(cfg) if n in ids], dim=-1)  # (R,T,M)
    v = F.linear(e, P[p + "w_v"])
    eps, K, dil = cfg.rms_norm_eps, cfg.engram_conv_kernel, cfg.engram_conv_dilation
    vts = []
    for m in range(S):
        k = F.linear(e, P[p + f"w_k.{m}"])
        s = (rms_norm(X[:, :, m], P[p + f"norm_q.{m}"], eps) * rms_norm(k, P[p + f"norm_k.{m}"], eps)).sum(-1)
        vts.append(torch.sigmoid(s / math.sqrt(C)).unsqueeze(-1) * v)
    vt = torch.stack(vts, 2)  # (R,T,S,C)
    z = torch.stack([rms_norm(vts[m], P[p + f"norm_c.{m}"], eps) for m in range(S)], 2)
    if first is None:
        zc = F.pad(z.reshape(R, T, S * C).transpose(1, 2), ((K - 1) * dil, 0))  # channel m·C + c
        y = F.conv1d(zc, P[p + "conv"], dilation=dil, groups=S * C).transpose(1, 2)
    else:  # y_t = Σ_i w[i]·z_{t−(K−1−i)·dil}, the tap zero when it falls before first[t]
        zf, w = z.reshape(R, T, S * C), P[p + "conv"][:, 0, :]  # (R,T,SC), (SC,K)
        y = torch.zeros_like(zf)
        t = torch.arange(T)
        for i in range(K):
            sh = (K - 1 - i) * dil
            zs = F.pad(zf, (0, 0, sh, 0))[:, :T]  # zs[:, t] = z[:, t − sh]
            keep = ((t[None, :] - sh) >= first).to(zf.dtype).unsqueeze(-1)
            y = y + w[:, i] * zs * keep
    return X + F.silu(y.reshape(R, T, S, C)) + vt


def is_trained(name):
    return not name.endswith("e_score_correction_bias")


def check_weights(cfg, P):
    want = {n: s for n, s, _, _ in param_table(cfg)}
    missing = [n for n in want if n not in P]
    extra = [n for n in P if n not in want]
    bad = [f"{n}: {tuple(P[n].shape)} != {want[n]}" for n in want if n in P and tuple(P[n].shape) != want[n]]
    if missing or extra or bad:
        msg = []
        if missing:
            msg.append("missing: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if extra:
            msg.append("unexpected: " + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
        if bad:
            msg.append("bad shape: " + "; ".join(bad[:10]))
        raise SystemExit("weights do not match the config:\n  " + "\n  ".join(msg))


def init_params(cfg, dtype, generator=None):
    """Fresh weights with the params.cc init kinds (not its counter RNG: for benchmarks)."""
    P = {}
    for name, shape, init, val in param_table(cfg):
        if init == "normal":
            x = torch.randn(shape, dtype=dtype, generator=generator) * val
        elif init == "ones":
            x = torch.ones(shape, dtype=dtype)
        elif init == "zeros":
            x = torch.zeros(shape, dtype=dtype)
        else:
            x = torch.full(shape, val, dtype=dtype)
        P[name] = x
    return P


# --------------------------------------------------------------------------- the model

def rms_norm(x, w, eps):
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x if w is None else x * w


def rope_tables(T, d, theta, dtype):
    """cos/sin of shape (T, d): column i and i + d/2 both hold angle p·θ_i, θ_i = theta^(−2i/d)."""
    i = torch.arange(d // 2, dtype=torch.float64)
    inv = theta ** (-2.0 * i / d)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate half. x (..., T, d) with cos/sin (T, d) broadcast over leading dims."""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    rot = torch.cat([-b, a], dim=-1)  # pairs (a_i, b_i) -> (a cos − b sin, b cos + a sin)
    return x * cos + rot * sin


def swiglu(P, p, x):
    return F.linear(F.silu(F.linear(x, P[p + "gate_proj.weight"])) * F.linear(x, P[p + "up_proj.weight"]),
                    P[p + "down_proj.weight"])


def mla(P, p, x, cfg, cos, sin, same=None):
    """x (R, T, C) -> (R, T, C). Causal within each row; positions 0..T−1 with cos/sin (T, d),
    or per token with cos/sin (R, T, d); `same` (R, T, T) bool: query and key in one
    document (document masking), None: the whole row is one document."""
    R, T, _ = x.shape
    H, dn, dr, dv = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    eps = cfg.rms_norm_eps
    c_q = rms_norm(F.linear(x, P[p + "q_a_proj.weight"]), P[p + "q_a_layernorm.weight"], eps)
    q = F.linear(c_q, P[p + "q_b_proj.weight"]).view(R, T, H, dn + dr).transpose(1, 2)  # (R,H,T,dq)
    q_nope, q_pe = q.split([dn, dr], dim=-1)
    q_pe = apply_rope(q_pe, cos, sin) if cos.dim() == 2 else apply_rope(q_pe, cos[:, None], sin[:, None])
    kv_a = F.linear(x, P[p + "kv_a_proj_with_mqa.weight"])
    c_kv, k_pe = kv_a.split([cfg.kv_lora_rank, dr], dim=-1)
    c_kv = rms_norm(c_kv, P[p + "kv_a_layernorm.weight"], eps)
    k_pe = apply_rope(k_pe, cos, sin)  # (R,T,dr), shared by all heads
    kv = F.linear(c_kv, P[p + "kv_b_proj.weight"]).view(R, T, H, dn + dv).transpose(1, 2)
    k_nope, v = kv.split([dn, dv], dim=-1)
    q = torch.cat([q_nope, q_pe], dim=-1)
    k = torch.cat([k_nope, k_pe[:, None].expand(R, H, T, dr)], dim=-1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dn + dr))
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    if same is not None:
        mask = mask[None] | ~same  # (R,T,T)
        mask = mask[:, None]  # (R,1,T,T) over heads
    scores = scores.masked_fill(mask, float("-inf"))
    prob = torch.softmax(scores, dim=-1)
    o = torch.matmul(prob, v).transpose(1, 2).reshape(R, T, H * dv)
    return F.linear(o, P[p + "o_proj.weight"])


def _stable_topk_desc(x, k):
    """Indices of the k largest along the last dim; ties go to the lower index."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices[..., :k]


def route(cfg, s, bias, deterministic=True):
    """Group-limited top-k. s (N, E) affinities (no grad needed), bias (E,). -> (N, top_k) int64."""
    N, E = s.shape
    G = cfg.n_group
    sel = s + bias
    if G > 1:
        grp = sel.view(N, G, E // G)
        m = min(2, E // G)
        if deterministic:
            gscore = torch.sort(grp, dim=-1, descending=True, stable=True).values[..., :m].sum(-1)
            keep = _stable_topk_desc(gscore, cfg.topk_group)
        else:
            gscore = grp.topk(m, dim=-1).values.sum(-1)
            keep = gscore.topk(cfg.topk_group, dim=-1).indices
        gmask = torch.zeros(N, G, dtype=torch.bool).scatter_(1, keep, True)
        emask = gmask[:, :, None].expand(N, G, E // G).reshape(N, E)
        sel = sel.masked_fill(~emask, float("-inf"))
    if deterministic:
        return _stable_topk_desc(sel, cfg.top_k)
    return sel.topk(cfg.top_k, dim=-1).indices


def moe(P, p, x, cfg, deterministic=True, forced_topi=None):
    """x (R, T, C). Returns (out (R,T,C), counts (E,) int64, bal_rows (R,), topi (N,k))."""
    R, T, C = x.shape
    E, K = cfg.n_routed_experts, cfg.top_k
    N = R * T
    xf = x.reshape(N, C)
    s = torch.sigmoid(F.linear(xf, P[p + "mlp.gate.weight"]))  # (N, E)
    bias = P[p + "mlp.gate.e_score_correction_bias"].detach()
    if forced_topi is None:
        with torch.no_grad():
            topi = route(cfg, s.detach(), bias, deterministic)
    else:
        topi = forced_topi
    s_top = s.gather(1, topi)  # (N, K)
    g = s_top / s_top.sum(-1, keepdim=True) * cfg.routed_scaling

    out = swiglu(P, p + "mlp.shared_experts.", xf) if cfg.n_shared_experts > 0 else torch.zeros_like(xf)
    flat_e = topi.reshape(-1)
    flat_tok = torch.arange(N).repeat_interleave(K)
    flat_g = g.reshape(-1)
    order = torch.argsort(flat_e, stable=True)
    counts = torch.bincount(flat_e, minlength=E)
    routed = torch.zeros_like(xf)
    start = 0
    for e, cnt in enumerate(counts.tolist()):
        if cnt == 0:
            continue
        idx = order[start:start + cnt]
        start += cnt
        tok = flat_tok[idx]
        y = swiglu(P, p + f"mlp.experts.{e}.", xf[tok]) * flat_g[idx, None]
        routed = routed.index_add(0, tok, y)
    out = out + routed

    # sequence-wise balance loss, per row (f is a constant, P_i differentiable)
    with torch.no_grad():
        sel_mask = torch.zeros(N, E, dtype=s.dtype).scatter_(1, topi, 1.0).view(R, T, E)
        f = sel_mask.sum(1) * (E / (K * T))  # (R, E)
    s_norm = (s / s.sum(-1, keepdim=True)).view(R, T, E)
    Pi = s_norm.mean(1)  # (R, E)
    bal_rows = cfg.seq_aux_alpha * (f * Pi).sum(-1)  # (R,)
    return out.view(R, T, C), counts, bal_rows, topi


def sinkhorn(M, iters):
    """M (n, n, ...): entry [k, j] of each token's matrix is M[k, j, ...] (matrix dims first, so
    the sums are vectorised over tokens). Each round: every row divided by its sum, then every
    column by its sum."""
    for _ in range(iters):
        M = M / M.sum(1, keepdim=True)  # row k: Σ_j M[k, j]
        M = M / M.sum(0, keepdim=True)  # column j: Σ_k M[k, j]
    return M


def mhc(P, p, X, fn, cfg):
    """X (R, T, n, C) streams; fn maps u (R,T,C) -> (R,T,C). SPEC §3.1."""
    R, T, n, C = X.shape
    flat = X.reshape(R, T, n * C)  # stream-major: element m·C + c
    xh = rms_norm(flat, None, cfg.rms_norm_eps)
    H_pre = torch.sigmoid(P[p + "alpha_pre"] * F.linear(xh, P[p + "phi_pre"]) + P[p + "b_pre"])
    H_post = 2.0 * torch.sigmoid(P[p + "alpha_post"] * F.linear(xh, P[p + "phi_post"]) + P[p + "b_post"])
    # row r of φ_res -> entry [r // n, r % n]
    H_res_t = P[p + "alpha_res"] * F.linear(xh, P[p + "phi_res"]) + P[p + "b_res"].reshape(n * n)
    H_res = sinkhorn(torch.exp(H_res_t).permute(2, 0, 1).reshape(n, n, R, T), cfg.sinkhorn_iters)
    H_res = H_res.permute(2, 3, 0, 1)  # (R, T, k, j)
    u = (H_pre.unsqueeze(-1) * X).sum(2)  # Σ_j H_pre[j] X_j
    y = fn(u)
    mixed = (H_res.unsqueeze(-1) * X.unsqueeze(2)).sum(3)  # X'_k = Σ_j H_res[k, j] X_j
    return mixed + H_post.unsqueeze(-1) * y.unsqueeze(-2)


def ce_sum(logits, targets):
    t = targets.reshape(-1).long()
    valid = t >= 0
    cnt = int(valid.sum())
    if cnt == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t, ignore_index=-1, reduction="sum"), cnt


def forward(P, cfg, inputs, targets, with_mtp=True, deterministic=True, forced=None, doc=None):
    """inputs/targets (R, T) int. Returns dict with loss, ce, mtp_ce, bal, counts{l: (E,)},
    topi{l: (N,k)}, ce_sum, n_valid. `forced` {l: topi} freezes the routing (for checks).
    doc (R, T) document ids or None (model/batch.h): with them, positions restart at 0 per
    document, attention, Engram and MTP stay inside a document, and an MTP position whose
    next token is in another document has no target."""
    inputs = inputs.long()
    R, T = inputs.shape
    eps = cfg.rms_norm_eps
    emb = P["model.embed_tokens.weight"]
    dtype = emb.dtype
    cos, sin = rope_tables(T, cfg.qk_rope_head_dim, cfg.rope_theta, dtype)
    first, same = None, None
    if doc is not None:
        doc = doc.long()
        first = doc_first(doc, R, T)
        pos = torch.arange(T)[None, :] - first  # (R,T)
        cos, sin = cos[pos], sin[pos]  # (R,T,d)
        same = doc[:, :, None] == doc[:, None, :]  # (R,T,T)
    h0 = emb[inputs]  # (R,T,C)
    counts, topis, bal_terms = {}, {}, []

    def make_ffn(l, p):
        def ffn(u):
            z = rms_norm(u, P[p + "post_attention_layernorm.weight"], eps)
            if cfg.is_moe_layer(l):
                out, cnt, bal_rows, topi = moe(P, p, z, cfg, deterministic,
                                               None if forced is None else forced[l])
                counts[l], topis[l] = cnt, topi
                bal_terms.append(bal_rows.sum())
                return out
            return swiglu(P, p + "mlp.", z)
        return ffn

    def make_attn(p):
        def attn(u):
            return mla(P, p + "self_attn.", rms_norm(u, P[p + "input_layernorm.weight"], eps), cfg, cos, sin,
                       same)
        return attn

    if cfg.residual == "mhc":
        X = h0.unsqueeze(2).expand(R, T, cfg.hc_mult, h0.shape[-1])
        for l in range(cfg.n_layers):
            p = f"model.layers.{l}."
            if l in cfg.engram_layers:
                X = engram(P, l, cfg, inputs, X, first)
            X = mhc(P, p + "attn_hc.", X, make_attn(p), cfg)
            X = mhc(P, p + "mlp_hc.", X, make_ffn(l, p), cfg)
        h = X.sum(2)
    else:
        h = h0
        for l in range(cfg.n_layers):
            p = f"model.layers.{l}."
            if l in cfg.engram_layers:
                h = engram(P, l, cfg, inputs, h.unsqueeze(2), first).squeeze(2)
            h = h + make_attn(p)(h)
            h = h + make_ffn(l, p)(h)

    head = P["lm_head.weight"]
    logits = F.linear(rms_norm(h, P["model.norm.weight"], eps), head)
    zero = logits.sum() * 0.0
    res = {"logits": logits, "counts": counts, "topi": topis}
    if targets is None:
        return res
    targets = targets.long()
    s_main, n_main = ce_sum(logits, targets)
    ce = s_main / n_main if n_main else zero
    res.update(ce_sum=s_main, n_valid=n_main)

    mtp_ce = zero
    if with_mtp and cfg.mtp_depth > 0 and T >= 2:
        hn = rms_norm(h[:, :-1], P["mtp.norm_h.weight"], eps)
        en = rms_norm(emb[inputs[:, 1:]], P["mtp.norm_e.weight"], eps)
        x = F.linear(torch.cat([hn, en], dim=-1), P["mtp.proj.weight"])
        if doc is None:
            c2, s2, same2, tgt2 = cos[:T - 1], sin[:T - 1], None, targets[:, 1:]
        else:  # position t keeps t's document and position; no target across a boundary
            c2, s2, same2 = cos[:, :T - 1], sin[:, :T - 1], same[:, :T - 1, :T - 1]
            tgt2 = targets[:, 1:].masked_fill(doc[:, 1:] != doc[:, :-1], -1)
        x = x + mla(P, "mtp.block.self_attn.", rms_norm(x, P["mtp.block.input_layernorm.weight"], eps), cfg, c2, s2,
                    same2)
        x = x + swiglu(P, "mtp.block.mlp.", rms_norm(x, P["mtp.block.post_attention_layernorm.weight"], eps))
        mlogits = F.linear(rms_norm(x, P["model.norm.weight"], eps), head)
        s_mtp, n_mtp = ce_sum(mlogits, tgt2)
        mtp_ce = s_mtp / n_mtp if n_mtp else zero
        res.update(mtp_sum=s_mtp, mtp_valid=n_mtp)

    bal = sum(bal_terms) / R if bal_terms else zero
    loss = ce + cfg.mtp_lambda * mtp_ce + bal
    res.update(loss=loss, ce=ce, mtp_ce=mtp_ce, bal=bal)
    return res


# --------------------------------------------------------------------------- commands

def load_weights(path, dtype=torch.float64):
    P, meta = safetensors_io.read_torch(path, dtype=dtype)
    cfg = config_from_metadata(meta)
    check_weights(cfg, P)
    return P, cfg, meta


def compute_grads(P, cfg, inputs, targets, doc=None):
    """FP64 loss and grads. Returns dict of output tensors (names as written by `grads`)."""
    leaves = {}
    for k, v in P.items():
        leaves[k] = v.detach().clone().requires_grad_(is_trained(k))
    res = forward(leaves, cfg, inputs, targets, doc=doc)
    names = [k for k in leaves if is_trained(k)]
    gs = torch.autograd.grad(res["loss"], [leaves[k] for k in names], allow_unused=True)
    out = {}
    for key in ("loss", "ce", "mtp_ce", "bal"):
        out[key] = res[key].detach().reshape(1).to(torch.float64)
    for k, g in zip(names, gs):
        out["grad." + k] = (torch.zeros_like(leaves[k]) if g is None else g).detach().to(torch.float64)
    for l, c in sorted(res["counts"].items()):
        out[f"counts.{l}"] = c.to(torch.int64)
    return out, res


def cmd_grads(a):
    torch.set_num_threads(a.threads) if a.threads else None
    P, cfg, meta = load_weights(a.weights)
    B, _ = safetensors_io.read_torch(a.batch)
    inputs, targets = B["inputs"].long(), B["targets"].long()
    if inputs.shape != targets.shape or inputs.dim() != 2:
        raise SystemExit(f"batch: inputs {tuple(inputs.shape)} / targets {tuple(targets.shape)} must be equal (R,T)")
    if int(inputs.min()) < 0 or int(inputs.max()) >= cfg.vocab_size:
        raise SystemExit("batch: input id out of range")
    doc = B["doc"].long() if "doc" in B else None
    if doc is not None and doc.shape != inputs.shape:
        raise SystemExit(f"batch: doc {tuple(doc.shape)} must have the inputs' shape {tuple(inputs.shape)}")
    t0 = time.time()
    out, _ = compute_grads(P, cfg, inputs, targets, doc)
    safetensors_io.write(a.out, out, {"troupe_config": meta["troupe_config"]})
    print(json.dumps({"loss": float(out["loss"]), "ce": float(out["ce"]), "mtp_ce": float(out["mtp_ce"]),
                      "bal": float(out["bal"]), "seconds": round(time.time() - t0, 3)}))


def text_rows(data, T):
    """Byte string -> (inputs, targets) (R, T) per the eval convention."""
    stream = [BOS] + list(data) + [EOS]
    n_pred = len(stream) - 1
    R = max(1, -(-n_pred // T))
    inp = torch.full((R, T), EOS, dtype=torch.long)
    tgt = torch.full((R, T), -1, dtype=torch.long)
    s = torch.tensor(stream, dtype=torch.long)
    for i in range(R):
        a = s[i * T: i * T + T]
        b = s[i * T + 1: i * T + T + 1]
        inp[i, :len(a)] = a
        tgt[i, :len(b)] = b
    return inp, tgt


def eval_text(P, cfg, data, chunk_rows=32):
    inp, tgt = text_rows(data, cfg.seq_len)
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, inp.shape[0], chunk_rows):
            r = forward(P, cfg, inp[i:i + chunk_rows], tgt[i:i + chunk_rows], with_mtp=False)
            tot += float(r["ce_sum"])
            cnt += r["n_valid"]
    return tot / max(cnt, 1), cnt


def cmd_eval(a):
    torch.set_num_threads(a.threads) if a.threads else None
    dtype = torch.float64 if a.dtype == "f64" else torch.float32
    P, cfg, _ = load_weights(a.weights, dtype)
    with open(a.text, "rb") as f:
        data = f.read()
    loss, n = eval_text(P, cfg, data, a.chunk_rows)
    print(json.dumps({"loss": loss, "tokens": n}))


# ------------------------------------------------------------------------ train-bench

def parse_value(s):
    import tomllib
    try:
        return tomllib.loads("v = " + s)["v"]
    except Exception:
        return s


def load_job_config(path, sets):
    import tomllib
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    for kv in sets or []:
        if "=" not in kv or "." not in kv.split("=", 1)[0]:
            raise SystemExit(f"--set {kv!r}: expected section.key=value")
        k, v = kv.split("=", 1)
        sec, key = k.strip().split(".", 1)
        doc.setdefault(sec, {})[key] = parse_value(v.strip())
    model = dict(MODEL_DEFAULTS)
    model.update(doc.get("model", {}))
    train = dict(TRAIN_DEFAULTS)
    train.update(doc.get("train", {}))
    opt = dict(OPTIMIZER_DEFAULTS)
    opt.update(doc.get("optimizer", {}))
    return model, train, opt


def cmd_train_bench(a):
    model_d, train, opt = load_job_config(a.config, a.set)
    if model_d.get("engram_layers"):
        print(f"train-bench: warning: engram_layers={model_d['engram_layers']} ignored (the eager peer "
              "has no sparse table optimizer and hashes in Python); the peer does less work", file=sys.stderr)
        model_d["engram_layers"] = []
    cfg = Config(model_d)
    threads = a.threads if a.threads else (train.get("threads") or os.cpu_count())
    torch.set_num_threads(threads)
    torch.manual_seed(int(train["seed"]))
    P = init_params(cfg, torch.float32)
    for k, v in P.items():
        v.requires_grad_(is_trained(k))
    n_params = sum(v.numel() for v in P.values())
    decay = [v for k, v in P.items() if is_trained(k) and v.dim() >= 2]
    no_decay = [v for k, v in P.items() if is_trained(k) and v.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"], foreach=True)
    trained = [v for k, v in P.items() if is_trained(k)]
    biases = {l: P[f"model.layers.{l}.mlp.gate.e_score_correction_bias"]
              for l in range(cfg.n_layers) if cfg.is_moe_layer(l)}
    Rb, T = int(train["batch_size"]), int(cfg.seq_len)
    warm, total_steps = int(train["warmup_steps"]), max(int(train["steps"]), 1)

    def lr_at(step):
        if step < warm:
            return train["lr"] * (step + 1) / warm
        pr = min(1.0, (step - warm) / max(1, total_steps - warm))
        return train["lr"] * (train["min_lr_ratio"] + (1 - train["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * pr)))

    def step(i):
        toks = torch.randint(0, 256, (Rb, T + 1))
        for g in optim.param_groups:
            g["lr"] = lr_at(i)
        optim.zero_grad(set_to_none=True)
        res = forward(P, cfg, toks[:, :-1], toks[:, 1:], deterministic=False)
        res["loss"].backward()
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(trained, train["grad_clip"])
        optim.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: b_i += γ·sign(mean(c) − c_i)
            for l, b in biases.items():
                c = res["counts"][l].to(b.dtype)
                b.add_(torch.sign(c.mean() - c) * cfg.bias_update_speed)
        return float(res["loss"])

    n_warm = 2
    for i in range(n_warm):
        step(i)
    t0 = time.perf_counter()
    for i in range(n_warm, n_warm + a.steps):
        last = step(i)
    dt = time.perf_counter() - t0
    if not math.isfinite(last):
        raise SystemExit(f"train-bench: loss is {last}")
    print(json.dumps({"tokens_per_s": Rb * T * a.steps / dt, "step_s": dt / a.steps, "params": n_params}))


# --------------------------------------------------------------------------- selftest

def naive_loss(P, cfg, inputs, targets):
    """Token-by-token, head-by-head transcription of the spec (slow; tiny configs only).
    Independent of the vectorised layout code: used to cross-check it in `selftest`."""
    eps = cfg.rms_norm_eps
    R, T = inputs.shape
    n, C, H = cfg.hc_mult, cfg.d_model, cfg.n_heads
    dn, dr, dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim

    def rms(v, w):
        y = v / torch.sqrt((v * v).mean() + eps)
        return y if w is None else y * w

    def lin(W, v):  # y[o] = Σ_i W[o, i] v[i]
        return torch.mv(W, v)

    def rope(v, pos):
        d = v.shape[0]
        out = [None] * d
        for i in range(d // 2):
            th = cfg.rope_theta ** (-2.0 * i / d)
            c, s = math.cos(pos * th), math.sin(pos * th)
            a, b = v[i], v[i + d // 2]
            out[i] = a * c - b * s
            out[i + d // 2] = b * c + a * s
        return torch.stack(out)

    def swi(p, v):
        return lin(P[p + "down_proj.weight"], F.silu(lin(P[p + "gate_proj.weight"], v)) * lin(P[p + "up_proj.weight"], v))

    def attn_seq(p, us):  # list of token vectors (positions 0..len-1)
        qs, ks, vs = [], [], []
        for t, u in enumerate(us):
            cq = rms(lin(P[p + "q_a_proj.weight"], u), P[p + "q_a_layernorm.weight"])
            q = lin(P[p + "q_b_proj.weight"], cq)
            kva = lin(P[p + "kv_a_proj_with_mqa.weight"], u)
            ckv = rms(kva[:cfg.kv_lora_rank], P[p + "kv_a_layernorm.weight"])
            kpe = rope(kva[cfg.kv_lora_rank:], t)
            kv = lin(P[p + "kv_b_proj.weight"], ckv)
            qh, kh, vh = [], [], []
            for hh in range(H):
                qq = q[hh * (dn + dr):(hh + 1) * (dn + dr)]
                qh.append(torch.cat([qq[:dn], rope(qq[dn:], t)]))
                kk = kv[hh * (dn + dv):(hh + 1) * (dn + dv)]
                kh.append(torch.cat([kk[:dn], kpe]))
                vh.append(kk[dn:])
            qs.append(qh)
            ks.append(kh)
            vs.append(vh)
        outs = []
        for t in range(len(us)):
            heads = []
            for hh in range(H):
                sc = torch.stack([(qs[t][hh] * ks[j][hh]).sum() / math.sqrt(dn + dr) for j in range(t + 1)])
                pr = torch.softmax(sc, 0)
                heads.append(sum(pr[j] * vs[j][hh] for j in range(t + 1)))
            outs.append(lin(P[p + "o_proj.weight"], torch.cat(heads)))
        return outs

    def moe_tok(p, u):
        E, K, G = cfg.n_routed_experts, cfg.top_k, cfg.n_group
        s = torch.sigmoid(lin(P[p + "mlp.gate.weight"], u))
        b = P[p + "mlp.gate.e_score_correction_bias"]
        sel = [float(s[i] + b[i]) for i in range(E)]
        gs = E // G
        gsc = []
        for g in range(G):
            vals = sorted(sel[g * gs:(g + 1) * gs], reverse=True)
            gsc.append(sum(vals[:2]))
        kept = sorted(range(G), key=lambda g: (-gsc[g], g))[:cfg.topk_group]
        cand = [i for i in range(E) if i // gs in kept]
        top = sorted(cand, key=lambda i: (-sel[i], i))[:K]
        den = sum(s[i] for i in top)
        out = swi(p + "mlp.shared_experts.", u) if cfg.n_shared_experts > 0 else torch.zeros(C, dtype=u.dtype)
        for i in top:
            out = out + s[i] / den * cfg.routed_scaling * swi(p + f"mlp.experts.{i}.", u)
        return out, top, s / s.sum()

    def mhc_tok(p, X):  # X: list of n vectors -> returns (u, function to finish)
        v = torch.cat(X)
        xh = rms(v, None)
        pre = [torch.sigmoid(P[p + "alpha_pre"][0] * (P[p + "phi_pre"][j] * xh).sum() + P[p + "b_pre"][j]) for j in range(n)]
        post = [2 * torch.sigmoid(P[p + "alpha_post"][0] * (P[p + "phi_post"][j] * xh).sum() + P[p + "b_post"][j]) for j in range(n)]
        M = [[torch.exp(P[p + "alpha_res"][0] * (P[p + "phi_res"][r * n + c] * xh).sum() + P[p + "b_res"][r, c])
              for c in range(n)] for r in range(n)]
        for _ in range(cfg.sinkhorn_iters):
            M = [[M[r][c] / sum(M[r]) for c in range(n)] for r in range(n)]
            cs = [sum(M[r][c] for r in range(n)) for c in range(n)]
            M = [[M[r][c] / cs[c] for c in range(n)] for r in range(n)]
        u = sum(pre[j] * X[j] for j in range(n))

        def finish(y):
            return [sum(M[k][j] * X[j] for j in range(n)) + post[k] * y for k in range(n)]
        return u, finish

    ce_s, ce_n, mtp_s, mtp_n, bal = 0.0, 0, 0.0, 0, 0.0
    emb = P["model.embed_tokens.weight"]
    for r in range(R):
        Xs = [[emb[int(inputs[r, t])]] * n if cfg.residual == "mhc" else [emb[int(inputs[r, t])]] for t in range(T)]
        for l in range(cfg.n_layers):
            p = f"model.layers.{l}."
            if cfg.residual == "mhc":
                us, fins = zip(*[mhc_tok(p + "attn_hc.", X) for X in Xs])
                ys = attn_seq(p + "self_attn.", [rms(u, P[p + "input_layernorm.weight"]) for u in us])
                Xs = [fin(y) for fin, y in zip(fins, ys)]
            else:
                ys = attn_seq(p + "self_attn.", [rms(X[0], P[p + "input_layernorm.weight"]) for X in Xs])
                Xs = [[X[0] + y] for X, y in zip(Xs, ys)]
            new, tops, sn = [], [], []
            for X in Xs:
                if cfg.residual == "mhc":
                    u, fin = mhc_tok(p + "mlp_hc.", X)
                else:
                    u, fin = X[0], (lambda y, X=X: [X[0] + y])
                z = rms(u, P[p + "post_attention_layernorm.weight"])
                if cfg.is_moe_layer(l):
                    y, top, sv = moe_tok(p, z)
                    tops.append(top)
                    sn.append(sv)
                else:
                    y = swi(p + "mlp.", z)
                new.append(fin(y))
            Xs = new
            if cfg.is_moe_layer(l):
                E, K = cfg.n_routed_experts, cfg.top_k
                for i in range(E):
                    fi = E / (K * T) * sum(1 for top in tops if i in top)
                    Pi = sum(sv[i] for sv in sn) / T
                    bal = bal + cfg.seq_aux_alpha * fi * Pi
        hs = [sum(X) for X in Xs]
        for t in range(T):
            lg = lin(P["lm_head.weight"], rms(hs[t], P["model.norm.weight"]))
            if int(targets[r, t]) >= 0:
                ce_s = ce_s - torch.log_softmax(lg, 0)[int(targets[r, t])]
                ce_n += 1
        if cfg.mtp_depth > 0:
            xs = [lin(P["mtp.proj.weight"], torch.cat([rms(hs[t], P["mtp.norm_h.weight"]),
                                                       rms(emb[int(inputs[r, t + 1])], P["mtp.norm_e.weight"])]))
                  for t in range(T - 1)]
            ys = attn_seq("mtp.block.self_attn.", [rms(x, P["mtp.block.input_layernorm.weight"]) for x in xs])
            xs = [x + y for x, y in zip(xs, ys)]
            xs = [x + swi("mtp.block.mlp.", rms(x, P["mtp.block.post_attention_layernorm.weight"])) for x in xs]
            for t in range(T - 1):
                tg = int(targets[r, t + 1])
                if tg >= 0:
                    lg = lin(P["lm_head.weight"], rms(xs[t], P["model.norm.weight"]))
                    mtp_s = mtp_s - torch.log_softmax(lg, 0)[tg]
                    mtp_n += 1
    ce = ce_s / ce_n if ce_n else 0.0
    mtp = mtp_s / mtp_n if mtp_n else 0.0
    return ce + cfg.mtp_lambda * mtp + bal / R


def selftest_weights(cfg, gen):
    """Random FP64 weights away from the init point so every path carries signal."""
    P = {}
    for name, shape, init, _ in param_table(cfg):
        if init == "normal":
            fan_in = shape[-1]
            std = 1.0 if name in ("model.embed_tokens.weight",) else 1.0 / math.sqrt(fan_in)
            if "phi_" in name:
                std = 0.5 / math.sqrt(fan_in)
            x = torch.randn(shape, dtype=torch.float64, generator=gen) * std
        elif init == "ones":
            x = 1.0 + 0.2 * torch.randn(shape, dtype=torch.float64, generator=gen)
        elif name.endswith("e_score_correction_bias"):
            x = 0.1 * torch.randn(shape, dtype=torch.float64, generator=gen)
        elif "alpha" in name:
            x = 0.5 + 0.5 * torch.rand(shape, dtype=torch.float64, generator=gen)
        else:  # b_pre/b_post/b_res
            x = 0.3 * torch.randn(shape, dtype=torch.float64, generator=gen)
        P[name] = x
    return P


SELFTEST_CFG = dict(vocab_size=258, seq_len=8, d_model=16, n_layers=2, n_heads=2, q_lora_rank=8,
                    kv_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=6,
                    rope_theta=10000.0, rms_norm_eps=1e-2, hc_mult=3, sinkhorn_iters=20,
                    first_k_dense=1, dense_inter=24, n_routed_experts=4, n_shared_experts=1,
                    moe_inter=8, top_k=2, n_group=2, topk_group=1, routed_scaling=1.5,
                    seq_aux_alpha=0.05, mtp_depth=1, mtp_lambda=0.3, seed=7)


# finite differences: |fd − autograd| ≤ FD_REL·max(|autograd|, FD_ABS/FD_REL); FD_ABS is above the
# roundoff of central differences of an O(10) loss in FP64 at h = 1e-4 (~1e-11).
FD_REL, FD_ABS = 1e-6, 1e-10


def cmd_selftest(a):
    import tempfile
    torch.set_num_threads(1)
    t_start = time.time()
    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    # 0. safetensors round trip
    with tempfile.TemporaryDirectory() as td:
        pth = os.path.join(td, "x.safetensors")
        ts = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(5), "c": torch.arange(6, dtype=torch.int32).view(2, 3),
              "d": torch.arange(4, dtype=torch.int64), "e": torch.zeros(0, 3)}
        safetensors_io.write(pth, ts, {"k": "v"})
        back, meta = safetensors_io.read_torch(pth)
        ok = meta == {"k": "v"} and all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in ts.items())
        check(ok, "safetensors round trip (F64 F32 I32 I64, empty tensor, metadata)")

    # 1. routing: vectorised vs per-token transcription, with planted ties
    rc = Config(dict(n_routed_experts=8, n_group=4, topk_group=2, top_k=3))
    g = torch.Generator().manual_seed(3)
    s = torch.randint(0, 4, (500, 8), generator=g).double() / 4  # many ties
    b = torch.tensor([0.0, 0.25, 0.0, 0.0, -0.25, 0.0, 0.0, 0.0], dtype=torch.float64)
    got = route(rc, s, b).tolist()
    want = []
    for row in s.tolist():
        sel = [row[i] + float(b[i]) for i in range(8)]
        gsc = [sum(sorted(sel[2 * gg:2 * gg + 2], reverse=True)[:2]) for gg in range(4)]
        kept = sorted(range(4), key=lambda gg: (-gsc[gg], gg))[:2]
        cand = [i for i in range(8) if i // 2 in kept]
        want.append(sorted(cand, key=lambda i: (-sel[i], i))[:3])
    check(got == want, "group-limited top-k routing, ties to the lower index (500 tokens)")

    # 1b. Engram hashing golden values (the same numbers as tests/model/engram_test.cc)
    check(splitmix64(0) == 16294208416658607535 and
          [engram_multiplier(1234, 1, k) for k in range(3)] == [371562323, 1194080917, 2174628627],
          "Engram: splitmix64(0) and the multipliers m_0..m_2 for seed 1234, layer 1")
    ec = Config(dict(engram_layers=[1], seed=1234))
    ids = engram_row_ids(ec, 1, torch.tensor([[72, 105, 32, 116, 10, 84]]))
    check(ids["model.layers.1.engram.tables.2.0"].tolist() == [[4960, 5498, 7504, 4203, 7965, 4203]]
          and [r for _, r, _ in engram_tables(ec)][:3] == [10007, 10009, 10037],
          "Engram: row ids of 'Hi t\\nT' (compression: ' t' == '\\nT') and prime table sizes")

    # 2. full model: grads via the CLI path, naive transcription, finite differences
    engram_sizes = dict(engram_layers=[1], engram_orders=[2, 3], engram_heads=2, engram_head_dim=3,
                        engram_table_rows=5, engram_conv_kernel=3, engram_conv_dilation=2)
    for variant in ({"residual": "mhc", "ffn": "moe"}, {"residual": "plain", "ffn": "dense"},
                    dict(residual="mhc", ffn="moe", **engram_sizes),
                    dict(residual="plain", ffn="dense", **engram_sizes)):
        cd = dict(SELFTEST_CFG)
        cd.update(variant)
        cfg = Config(cd)
        tag = f"[{variant['residual']}/{variant['ffn']}{'/engram' if cfg.engram_layers else ''}]"
        gen = torch.Generator().manual_seed(11)
        P = selftest_weights(cfg, gen)
        R, T = 2, cfg.seq_len
        inputs = torch.randint(0, VOCAB, (R, T), generator=gen, dtype=torch.int64).to(torch.int32)
        inputs[0, 0] = BOS
        targets = torch.cat([inputs[:, 1:], torch.randint(0, VOCAB, (R, 1), generator=gen).int()], 1)
        targets[0, 3] = -1
        targets[1, 5] = -1
        targets[1, 7] = -1
        with tempfile.TemporaryDirectory() as td:
            wp, bp, gp = (os.path.join(td, f) for f in ("w.safetensors", "b.safetensors", "g.safetensors"))
            safetensors_io.write(wp, P, {"troupe_config": json.dumps(cfg.to_dict())})
            safetensors_io.write(bp, {"inputs": inputs, "targets": targets})
            cmd_grads(argparse.Namespace(weights=wp, batch=bp, out=gp, threads=1))
            G, _ = safetensors_io.read_torch(gp)
        want_names = {"loss", "ce", "mtp_ce", "bal"} | {"grad." + k for k in P if is_trained(k)} | \
                     {f"counts.{l}" for l in range(cfg.n_layers) if cfg.is_moe_layer(l)}
        check(set(G) == want_names and all(G["grad." + k].shape == P[k].shape for k in P if is_trained(k)),
              f"{tag} grads output names and shapes ({len(G)} tensors)")
        inputs, targets = inputs.long(), targets.long()
        base = forward(P, cfg, inputs, targets)
        forced = {l: t for l, t in base["topi"].items()}
        for l, c in base["counts"].items():
            check(int(c.sum()) == R * T * cfg.top_k and torch.equal(c, G[f"counts.{l}"]), f"{tag} counts.{l} = {c.tolist()}")
        if not cfg.engram_layers:  # the naive transcription has no Engram; FD covers it below
            with torch.no_grad():
                nl = naive_loss(P, cfg, inputs, targets)
            err = abs(float(nl) - float(G["loss"])) / abs(float(nl))
            check(err < 1e-12, f"{tag} loss {float(G['loss']):.12f} vs naive per-token transcription: rel err {err:.1e}")
        else:  # tiny prime tables: rows collide, so a table row's gradient sums positions
            touched = sum(int((G["grad." + n].abs().sum(1) > 0).sum()) for n, _, _ in engram_tables(cfg))
            check(0 < touched < len(engram_tables(cfg)) * R * T,
                  f"{tag} {touched} touched table rows for {R * T} positions x {len(engram_tables(cfg))} tables")
        if cfg.ffn == "moe":
            check(float(G["bal"]) > 0, f"{tag} balance loss is positive ({float(G['bal']):.3e})")
            with torch.no_grad():  # the benchmark's torch.topk routing agrees when there are no ties
                fast = forward(P, cfg, inputs, targets, deterministic=False)
            check(all(torch.equal(fast["counts"][l], c) for l, c in base["counts"].items())
                  and abs(float(fast["loss"]) - float(G["loss"])) < 1e-12, f"{tag} topk routing == stable-sort routing")

        def L(Q):
            with torch.no_grad():
                return float(forward(Q, cfg, inputs, targets, forced=forced)["loss"])

        # directional derivative along a random direction, one per trained tensor, Richardson-extrapolated
        worst, worst_name = 0.0, ""
        gen2 = torch.Generator().manual_seed(5)
        for name in P:
            if not is_trained(name):
                continue
            d = torch.randn(P[name].shape, dtype=torch.float64, generator=gen2)
            d = d / d.norm()  # unit direction: the step size does not grow with the tensor
            ad = float((G["grad." + name] * d).sum())

            def D(hh):
                Q = dict(P)
                Q[name] = P[name] + hh * d
                lp = L(Q)
                Q[name] = P[name] - hh * d
                return (lp - L(Q)) / (2 * hh)
            fd = D(1e-4)  # central difference: truncation ~1e-8·|f'''|, roundoff ~1e-11
            e = abs(fd - ad) / max(abs(ad), FD_ABS / FD_REL)
            if e > worst:
                worst, worst_name = e, name
            if e > FD_REL:
                check(False, f"{tag} d/d{name}: autograd {ad:.10e} vs finite diff {fd:.10e} (rel {e:.1e})")
            elif a.verbose:
                print(f"      {name}: autograd {ad:+.12e} fd {fd:+.12e} rel {e:.1e}")
        n_t = sum(1 for k in P if is_trained(k))
        check(worst <= FD_REL, f"{tag} directional finite differences on all {n_t} trained tensors: worst err "
                               f"{worst:.1e} ({worst_name})")
        # a few single entries
        picks = [n for n in ("model.layers.1.engram.conv", "model.layers.1.engram.norm_c.0",
                             "model.layers.1.attn_hc.alpha_res", "model.layers.0.mlp_hc.b_res",
                             "model.layers.1.mlp.gate.weight", "model.layers.1.self_attn.kv_a_proj_with_mqa.weight",
                             "mtp.proj.weight", "model.embed_tokens.weight") if n in P]
        for name in picks:
            flat = P[name].reshape(-1)
            if name == "model.embed_tokens.weight":
                idxs = [int(inputs[1, 2]) * cfg.d_model + 3]
            elif name.endswith("kv_a_proj_with_mqa.weight"):  # entries of k_pe rows
                idxs = [(cfg.kv_lora_rank + 1) * cfg.d_model, flat.numel() - 1]
            else:
                idxs = sorted({0, flat.numel() - 1})
            for idx in idxs:
                ad = float(G["grad." + name].reshape(-1)[idx])

                def D1(hh):
                    Q = dict(P)
                    e1 = torch.zeros_like(flat)
                    e1[idx] = hh
                    Q[name] = (flat + e1).view(P[name].shape)
                    lp = L(Q)
                    Q[name] = (flat - e1).view(P[name].shape)
                    return (lp - L(Q)) / (2 * hh)
                fd = (4 * D1(5e-4) - D1(1e-3)) / 3
                e = abs(fd - ad) / max(abs(ad), FD_ABS / FD_REL)
                check(e <= FD_REL, f"{tag} {name}[{idx}]: autograd {ad:+.10e} finite diff {fd:+.10e} rel {e:.1e}")

    # 3. eval: consistent with the forward on the same rows
    cfg = Config(dict(SELFTEST_CFG))
    P = selftest_weights(cfg, torch.Generator().manual_seed(2))
    data = b"Hello, troupe!\nA fortune a day.\n"
    loss, n = eval_text(P, cfg, data, chunk_rows=2)
    inp, tgt = text_rows(data, cfg.seq_len)
    r = forward(P, cfg, inp, tgt)
    check(n == len(data) + 1 and inp[-1, -1] == EOS and abs(loss - float(r["ce"])) < 1e-12 and tgt[0, 0] == data[0]
          and inp[0, 0] == BOS, f"eval: {n} tokens, loss {loss:.6f} (chunked == one batch)")

    # 4. document masking: a row of documents end to end (and padding) gives each document the
    # logits and MTP loss it gets alone as a row (MoE routing is per token, so also with MoE)
    for variant in ({"residual": "mhc", "ffn": "moe"}, dict(residual="plain", ffn="dense", **engram_sizes),
                    dict(residual="mhc", ffn="moe", **engram_sizes)):
        cd = dict(SELFTEST_CFG)
        cd.update(variant)
        cfg = Config(cd)
        gen = torch.Generator().manual_seed(5)
        P = selftest_weights(cfg, gen)
        lens, T = [3, 7, 1, 5], 18  # 16 tokens of documents and 2 of padding
        docs = [torch.randint(0, VOCAB, (1, n + 1), generator=gen) for n in lens]
        inputs = torch.cat([d[:, :-1] for d in docs] + [torch.full((1, 2), EOS)], 1)
        targets = torch.cat([d[:, 1:] for d in docs] + [torch.full((1, 2), -1)], 1)
        doc = torch.cat([torch.full((1, n), i) for i, n in enumerate(lens)] + [torch.full((1, 2), 9)], 1)
        r = forward(P, cfg, inputs, targets, doc=doc)
        err, mtp_sum, at = 0.0, 0.0, 0
        for d, n in zip(docs, lens):
            one = forward(P, cfg, d[:, :-1], d[:, 1:])
            err = max(err, float((one["logits"][0] - r["logits"][0, at:at + n]).abs().max()))
            mtp_sum += float(one.get("mtp_sum", 0.0))
            at += n
        e_mtp = abs(mtp_sum - float(r["mtp_sum"]))
        check(err < 1e-10 and e_mtp < 1e-9 and r["mtp_valid"] == sum(n - 1 for n in lens),
              f"documents {variant.get('residual')}/{variant.get('ffn')}"
              f"{'/engram' if cfg.engram_layers else ''}: a packed row of 4 documents == each alone "
              f"(logits max err {err:.1e}, MTP CE sum err {e_mtp:.1e})")

    dt = time.time() - t_start
    print(f"selftest: {'PASS' if not failures else 'FAIL (%d)' % len(failures)} in {dt:.1f} s")
    sys.exit(1 if failures else 0)


# --------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grads", help="FP64 loss, gradients and expert counts for one batch")
    g.add_argument("--weights", required=True)
    g.add_argument("--batch", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--threads", type=int, default=0)
    e = sub.add_parser("eval", help="mean next-token CE of a text file")
    e.add_argument("--weights", required=True)
    e.add_argument("--text", required=True)
    e.add_argument("--chunk-rows", type=int, default=32)
    e.add_argument("--dtype", choices=("f64", "f32"), default="f64")
    e.add_argument("--threads", type=int, default=0)
    b = sub.add_parser("train-bench", help="eager FP32 PyTorch training throughput (the benchmark peer)")
    b.add_argument("--config", required=True)
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--threads", type=int, default=0)
    s = sub.add_parser("selftest", help="finite-difference and transcription checks (exit 1 on failure)")
    s.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    {"grads": cmd_grads, "eval": cmd_eval, "train-bench": cmd_train_bench, "selftest": cmd_selftest}[a.cmd](a)


if __name__ == "__main__":
    main()
