#!/usr/bin/python3
"""Generates DIR/dsa_ref.safetensors: sparta's dynamic sparse attention (DSA)
computed by PyTorch in float64 from the equations documented in
src/ops/attention_dsa.h, dsa_budget.h and block_sparse_attention.h, the
ground truth that sparta_dsa_reference_tests compares DsaAttention against.

Usage: dsa_reference.py --out DIR

Written from the headers only (no code shared with sparta): per (b, h) and
query row t (every row selects on its own)
    K̄[kb], V̄[kb]  mean key / value of key block kb (nkb = ceil(T / block)
                   blocks, the last may be short)
    c[t][kb]       q_t·K̄[kb]/sqrt(D) + ln(len(kb))
    window         causal: key blocks last-W+1 .. last (last = key block of
                   row t, W = ceil(window / block)); bidirectional:
                   |kb - last| < W
    candidates     causal: kb <= last - W; bidirectional: |kb - last| >= W
    top            dsa_top_blocks(T)
  coarse (group) level, G = group key blocks per group:
    groups         g = 0 .. floor(nkb / G) - 1 = key blocks g*G .. g*G+G-1 (the
                   short last block may be in one); later blocks are in none
    whole          group g is whole for row t when all its G blocks are
                   candidates of row t
    m              max(group_keep, ceil(top / G))
    active         the coarse step runs for row t iff G >= 2, top < #candidates
                   and #whole groups > m; an inactive row has no unkept group
    K̄_g, V̄_g      mean key / value over all len_g tokens of group g
    cg[t][g]       q_t·K̄_g/sqrt(D) + ln(len_g)
    kept           the m best whole groups by rg (ties: smaller id, NaN last);
                   the other whole groups are unkept; a hard choice, no gradient
    fine           the candidates outside the unkept groups (all candidates
                   when the row is inactive)
    selected       window ∪ the top best fine candidates by r (ties: smaller
                   id, NaN last); a hard choice, no gradient
  ranking (DsaConfig::rank), what kept and selected order by:
    "mean"         r = c, rg = cg
    "bound"        r[t][kb] = Σ_d max(q_td·max_j k_jd, q_td·min_j k_jd)/sqrt(D),
                   max / min per dimension over the tokens j of block kb (an
                   upper bound of the block's largest token logit); rg the same
                   over the tokens of group g. Only the ranking changes: the
                   summary below still uses c and cg
    summary        S = unselected fine candidates (score c, value V̄) ∪ unkept
                   groups (score cg, value V̄_g), NaN scores left out: one extra
                   key per row with logit L = logsumexp_S score and value
                   Σ_S softmax_S(score)·value (-inf / 0 when S is empty)
    out, lse       one softmax per row over its selected tokens (token
                   causality when causal) plus the summary key
Gradients (autograd) flow through the selected tokens and through the summary
(L and its value -> c, cg -> q_t, K̄, K̄_g (evenly to the keys of the block /
group); V̄, V̄_g), never through the top-m / top-k choices (nor the bounds).

Cases: B=2, H=2, D in {8, 16}, block 16 (8 for the block-constant and the
coarse ones), causal and bidirectional, T a multiple of the block or not,
summary on and off, budgets in all three regimes of the budget formula, two
that cover every candidate (must equal dense attention) and two with keys and
values constant inside each key block (the summary then reproduces dense
attention exactly whatever is selected). All these use group 8, group_keep 4:
with at most one whole group the coarse step never runs (asserted). Five
"coarse" cases run it in most rows: block 8, T=203 (nkb=26, block 25 holds 3
tokens), window 16, G=2 (group 12 = blocks 24, 25 with the short block) or
G=3 (blocks 24, 25 in no group), m from group_keep or from ceil(top / G),
causal and bidirectional, summary on and off, separate and fused layouts.
All of these rank by "mean". Three "bound" cases rank by the bound: a causal
coarse G=2 one with summary, a bidirectional coarse G=3 one with summary
(fused), and a causal T=192 one without coarse step or summary (group 8);
each selects other blocks than the same case ranked by "mean" in about half
or more of its rows, and the coarse ones drop other groups in most coarse
rows (asserted: at least MIN_RANK_DIFFERENCE of the rows).

File contents, per case NAME (float tensors F32, masks I32):
    NAME.q, NAME.k, NAME.v, NAME.dout   (B, T, H, D)  inputs (float32 values)
    NAME.out                            (B, T, H, D)
    NAME.lse                            (B, H, T)
    NAME.dq, NAME.dk, NAME.dv           (B, T, H, D)  gradients of sum(out * dout)
    NAME.selection                      (B, H, T, nkb)  1 = key block attended by row t
    NAME.candidate                      (B, H, T, nkb)  1 = candidate (fine candidates:
                                                        candidate and not coarse)
    NAME.coarse                         (B, H, T, nkb)  1 = in an unkept whole group of
                                                        row t (0 in inactive rows)
    NAME.scores                         (B, H, T, nkb)  c (all blocks)
    NAME.summary_logit                  (B, H, T)     -inf: nothing summarised
    NAME.summary_value                  (B, H, T, D)  (only with summary; 0 where the logit is -inf)
    NAME.bound                          (B, H, T, nkb)  r (only rank "bound"; all blocks)
__metadata__["cases"] is a JSON list of the case configurations (group,
group_keep and rank among them) plus what the script computed: budget,
top_blocks, window_blocks, groups (floor(nkb / G)), kept_groups (m),
coarse_rows ((b, h, t) rows where the coarse step ran), selection_margin (of
r; null when no fine candidate is left unselected), group_margin (of rg; null
when no row ran the coarse step), rank_differs_rows ((b, h, t) rows whose
selection differs from that of the same case ranked by "mean"; 0 for "mean"
cases) and equals_dense.

Self-checks (assertion error, non-zero exit): the full-budget and
block-constant cases equal an independent dense float64 attention (forward
and gradients), and so do two unwritten group-constant configurations where
the coarse step runs (keys and values constant inside each group); the
gradients of four cases (one coarse, one coarse ranked by the bound, with
fewer probes) match central finite differences (float64; the selection and the unkept groups are
verified unchanged under the perturbations); the scorer really receives
gradient (detaching c and cg changes dq and dk, and in coarse cases detaching
cg alone does too); the coarse step runs in every coarse case and in no
other; with group 1 and with group_keep >= #groups a coarse case reproduces
the coarse-free computation bit for bit (outputs, plan and gradients) while
the real configuration differs from it; every case leaves ranking margins (r, rg) between selected
and unselected fine candidates and between kept and unkept groups large
enough that float32 cannot flip a choice; in the bound cases no token logit
exceeds its block's / group's bound, and the selection and the unkept groups
differ from the mean ranking's as stated above; the file parses back
unchanged.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_reference import read_safetensors, write_safetensors  # noqa: E402

SEED = 1234
FILE_NAME = "dsa_ref.safetensors"
# Smallest allowed gap between the lowest selected and the highest unselected
# candidate ranking value (and between the lowest kept and the highest unkept
# group ranking value): float32 scores and bounds are accurate to ~1e-6, so a
# gap above this cannot flip in sparta's float32 selection.
MIN_MARGIN = 1e-4


@dataclass
class Case:
    name: str
    causal: bool
    T: int
    D: int
    block: int
    window: int
    top_k: int
    keep_short: float
    keep_long: float
    short_len: int
    long_len: int
    summary: bool
    group: int                  # G: key blocks per coarse group
    group_keep: int             # whole groups kept at least (m = max(group_keep, ceil(top / G)))
    layout: str = "separate"    # "fused": the C++ test packs q|k|v into one padded buffer
    inputs: str = "random"      # "block_constant": keys and values constant inside a key block;
                                # "group_constant" (self-check only): constant inside a group
    redraw: int = 0             # inputs are drawn with seed SEED + 1000 * redraw + case index; bumped
                                # when a draw's selection or group margin was below MIN_MARGIN
    rank: str = "mean"          # how groups and blocks are ranked for selection: "mean" (by cg, c)
                                # or "bound" (by the box bound of their largest token logit)
    B: int = 2
    H: int = 2


# Budget configurations (tokens). For each, the regime of dsa_key_budget it hits:
#   A at T=203: T > long_len      -> raw = 0.25*128*ln(203)/ln(128) = 35.04 -> 36; max(32+24, 36) = 56 -> 2 top blocks
#   B at T=192: short < T <= long -> f = 0.6*0.5^(ln3/ln4) = 0.3466, raw = 66.5 -> 67 -> ceil(51/16) = 4 top blocks
#   C at T=160: T <= short_len    -> raw = 0.3*160 = 48 -> ceil(32/16) = 2 top blocks
#   F at T=203: keep 100%         -> budget 203 -> 11 top blocks = every candidate
#   W at T=203: window 40 (W=3)   -> raw 36; max(40+24, 36) = 64 -> ceil(24/16) = 2 top blocks
#   K at T=101: block 8, T <= short_len -> raw = 0.2*101 = 20.2 -> 21 -> ceil(13/8) = 2 top blocks
# The coarse configurations, all block 8, window 16 (W=2) at T=203 (nkb=26):
#   P: raw 36; max(16+8, 36) = 36   -> ceil(20/8) = 3 top blocks; G=2: m = max(2, 2) = 2
#   Q: raw = 0.1*128*ln(203)/ln(128) = 14.02 -> 15; max(16+16, 15) = 32 -> 2 top blocks; G=3: m = max(3, 1) = 3
#   R: raw 36; max(16+40, 36) = 56  -> 5 top blocks; G=2: m = max(2, ceil(5/2)) = 3 (from top, not group_keep)
A = dict(block=16, window=32, top_k=24, keep_short=0.5, keep_long=0.25, short_len=64, long_len=128)
B_ = dict(block=16, window=16, top_k=8, keep_short=0.6, keep_long=0.3, short_len=64, long_len=256)
C = dict(block=16, window=16, top_k=16, keep_short=0.3, keep_long=0.1, short_len=256, long_len=512)
F = dict(block=16, window=32, top_k=16, keep_short=1.0, keep_long=1.0, short_len=256, long_len=512)
W = dict(block=16, window=40, top_k=24, keep_short=0.5, keep_long=0.25, short_len=64, long_len=128)
K = dict(block=8, window=8, top_k=8, keep_short=0.2, keep_long=0.1, short_len=128, long_len=256)
P = dict(block=8, window=16, top_k=8, keep_short=0.5, keep_long=0.25, short_len=64, long_len=128)
Q = dict(block=8, window=16, top_k=16, keep_short=0.5, keep_long=0.1, short_len=64, long_len=128)
R = dict(block=8, window=16, top_k=40, keep_short=0.5, keep_long=0.25, short_len=64, long_len=128)

CASES = [
    Case("causal_T203_summary", True, 203, 16, summary=True, group=8, group_keep=4, layout="fused", **A),
    Case("causal_T203_nosummary", True, 203, 8, summary=False, group=8, group_keep=4, **A),
    Case("causal_T192_summary", True, 192, 8, summary=True, group=8, group_keep=4, **B_),
    Case("causal_T192_nosummary", True, 192, 16, summary=False, group=8, group_keep=4, layout="fused", **B_),
    Case("causal_T203_full_summary", True, 203, 8, summary=True, group=8, group_keep=4, **F),
    Case("causal_T203_w40_summary", True, 203, 8, summary=True, group=8, group_keep=4, layout="fused", **W),
    Case("bidir_T203_summary", False, 203, 16, summary=True, group=8, group_keep=4, **A),
    Case("bidir_T160_summary", False, 160, 8, summary=True, group=8, group_keep=4, layout="fused", **C),
    Case("bidir_T160_nosummary", False, 160, 16, summary=False, group=8, group_keep=4, **C),
    Case("bidir_T203_full_summary", False, 203, 16, summary=True, group=8, group_keep=4, layout="fused", **F),
    Case("causal_T101_blockconst_summary", True, 101, 8, summary=True, group=8, group_keep=4,
         inputs="block_constant", redraw=1, **K),
    Case("bidir_T101_blockconst_summary", False, 101, 8, summary=True, group=8, group_keep=4,
         inputs="block_constant", layout="fused", **K),
    Case("causal_T203_coarse_g2_summary", True, 203, 8, summary=True, group=2, group_keep=2, **P),
    Case("causal_T203_coarse_g3_nosummary", True, 203, 16, summary=False, group=3, group_keep=3,
         layout="fused", **Q),
    Case("bidir_T203_coarse_g2_summary", False, 203, 16, summary=True, group=2, group_keep=2, **P),
    Case("bidir_T203_coarse_g3_summary", False, 203, 8, summary=True, group=3, group_keep=3,
         layout="fused", **Q),
    Case("causal_T203_coarse_g2m3_summary", True, 203, 8, summary=True, group=2, group_keep=2, **R),
    # rank = "bound" (appended, so the cases above keep their seeds).
    Case("causal_T203_coarse_g2_bound_summary", True, 203, 8, summary=True, group=2, group_keep=2,
         rank="bound", **P),
    Case("bidir_T203_coarse_g3_bound_summary", False, 203, 16, summary=True, group=3, group_keep=3,
         rank="bound", layout="fused", **Q),
    Case("causal_T192_bound_nosummary", True, 192, 8, summary=False, group=8, group_keep=4,
         rank="bound", **B_),
]
# Finite-difference cases: name -> single-entry probes per tensor (q, k, v), besides one random
# direction through all three. The bound case gets fewer: its gradient paths are those of the
# coarse case (the ranking is a hard choice); only what is selected differs.
FD_CASES = {"causal_T203_summary": 6, "bidir_T203_summary": 6, "bidir_T203_coarse_g2_summary": 6,
            "causal_T203_coarse_g2_bound_summary": 1}
# A rank = "bound" case must select differently from the same case with rank = "mean" in at
# least this share of its rows with unselected candidates, or it would not test the ranking.
MIN_RANK_DIFFERENCE = 0.25
# The coarse case whose group=1 and group_keep >= #groups variants must reproduce the
# coarse-free computation, and the group-constant configurations (not written).
EQUIVALENCE_CASE = "causal_T203_coarse_g2_summary"
GROUP_CONSTANT_CHECKS = [
    Case("causal_T203_groupconst_check", True, 203, 8, summary=True, group=3, group_keep=3,
         inputs="group_constant", **Q),
    Case("bidir_T203_groupconst_check", False, 203, 8, summary=True, group=2, group_keep=2,
         inputs="group_constant", **P),   # group 12 holds the short block 25
]


# ------------------------------------------------------------- budget (dsa_budget.h)

def key_budget(c: Case, T: int) -> int:
    if T == 0:
        return 0
    if T <= c.short_len:
        raw = c.keep_short * T
    elif T <= c.long_len:
        u = math.log(T / c.short_len) / math.log(c.long_len / c.short_len)
        raw = c.keep_short * (c.keep_long / c.keep_short) ** u * T
    else:
        raw = c.keep_long * c.long_len * math.log(T) / math.log(c.long_len)
    return min(T, max(c.window + c.top_k, math.ceil(raw)))


def window_blocks(c: Case) -> int:
    return -(-c.window // c.block)


def top_blocks(c: Case, T: int) -> int:
    return max(0, -(-(key_budget(c, T) - c.window) // c.block))


def num_groups(c: Case) -> int:
    return (-(-c.T // c.block)) // c.group


def kept_groups(c: Case, T: int) -> int:
    return max(c.group_keep, -(-top_blocks(c, T) // c.group))


# ------------------------------------------------------------------- DSA in float64

def block_layout(c: Case):
    """window[t, kb] and candidate[t, kb] masks (T, nkb), the same for every (b, h)."""
    nkb, Wb = -(-c.T // c.block), window_blocks(c)
    window = torch.zeros(c.T, nkb, dtype=torch.bool)
    cand = torch.zeros(c.T, nkb, dtype=torch.bool)
    for j in range(c.T):
        last = j // c.block
        for kb in range(nkb):
            if c.causal:
                window[j, kb] = last - Wb + 1 <= kb <= last
                cand[j, kb] = kb <= last - Wb
            else:
                window[j, kb] = abs(kb - last) < Wb
                cand[j, kb] = abs(kb - last) >= Wb
    return window, cand


def group_layout(cand: torch.Tensor, c: Case):
    """whole[t, g] (T, ng): all G blocks of group g are candidates of row t; active[t] (T,):
    the coarse step runs for row t. The same for every (b, h)."""
    T, G, ng = c.T, c.group, num_groups(c)
    whole = cand[:, :ng * G].reshape(T, ng, G).all(dim=-1)
    active = ((G >= 2) & (top_blocks(c, T) < cand.sum(dim=-1))
              & (whole.sum(dim=-1) > kept_groups(c, T)))
    return whole, active


def summaries(k, v, c: Case):
    """k, v: (B, H, T, D). Returns K̄, V̄ (B, H, nkb, D), block lengths (nkb,)."""
    T, nkb = c.T, -(-c.T // c.block)
    ks, vs, lens = [], [], []
    for kb in range(nkb):
        lo, hi = kb * c.block, min((kb + 1) * c.block, T)
        ks.append(k[:, :, lo:hi].mean(dim=2))
        vs.append(v[:, :, lo:hi].mean(dim=2))
        lens.append(hi - lo)
    return torch.stack(ks, dim=2), torch.stack(vs, dim=2), torch.tensor(lens, dtype=torch.float64)


def group_summaries(k, v, c: Case):
    """k, v: (B, H, T, D). Returns K̄_g, V̄_g (B, H, ng, D) over all tokens of each group
    (ng >= 1), group lengths (ng,)."""
    span = c.group * c.block
    ks, vs, lens = [], [], []
    for g in range(num_groups(c)):
        lo, hi = g * span, min((g + 1) * span, c.T)
        ks.append(k[:, :, lo:hi].mean(dim=2))
        vs.append(v[:, :, lo:hi].mean(dim=2))
        lens.append(hi - lo)
    return torch.stack(ks, dim=2), torch.stack(vs, dim=2), torch.tensor(lens, dtype=torch.float64)


def box_bounds(qh, kh, spans) -> torch.Tensor:
    """qh, kh (B, H, T, D); spans: token ranges [lo, hi). Returns (B, H, T, len(spans)): per query
    row, Σ_d max(q_d·max_j k_jd, q_d·min_j k_jd) / sqrt(D) over the keys k_j of each span, an upper
    bound of the span's largest token logit q·k_j/sqrt(D). No gradient (it only ranks)."""
    qh, kh = qh.detach(), kh.detach()
    kmax = torch.stack([kh[:, :, lo:hi].amax(dim=2) for lo, hi in spans], dim=2)      # (B, H, n, D)
    kmin = torch.stack([kh[:, :, lo:hi].amin(dim=2) for lo, hi in spans], dim=2)
    q = qh[:, :, :, None, :]                                                           # (B, H, T, 1, D)
    both = torch.maximum(q * kmax[:, :, None], q * kmin[:, :, None])                   # (B, H, T, n, D)
    return both.sum(dim=-1) / math.sqrt(qh.shape[-1])


def block_spans(c: Case):
    return [(kb * c.block, min((kb + 1) * c.block, c.T)) for kb in range(-(-c.T // c.block))]


def group_spans(c: Case):
    span = c.group * c.block
    return [(g * span, min((g + 1) * span, c.T)) for g in range(num_groups(c))]


def pick_top(scores: torch.Tensor, cand: torch.Tensor, n: int) -> torch.Tensor:
    """The n best of the entries where cand (broadcast to scores' shape (B, H, rows, n_ids)) is
    set, per (b, h, row): higher score first, ties -> smaller id, NaN last."""
    s = scores.detach().tolist()
    m = cand.expand(scores.shape).tolist()
    chosen = []
    for s_b, m_b in zip(s, m):
        for s_bh, m_bh in zip(s_b, m_b):
            for s_row, m_row in zip(s_bh, m_bh):
                ids = [i for i, on in enumerate(m_row) if on]
                ids.sort(key=lambda i: (math.isnan(s_row[i]), 0.0 if math.isnan(s_row[i]) else -s_row[i], i))
                row = [False] * len(m_row)
                for i in ids[:n]:
                    row[i] = True
                chosen.append(row)
    return torch.tensor(chosen, dtype=torch.bool).reshape(scores.shape)


def soft_summary(scores, mask, values):
    """scores, mask (B, H, T, n), values (B, H, n, D) -> logit L = logsumexp over the masked
    entries (-inf where none), value = softmax-weighted values (0 where none), has (B, H, T)."""
    has = mask.any(dim=-1)
    # Rows with nothing to summarise get a finite dummy so that no -inf - -inf
    # (NaN) appears anywhere in the graph; their logit is then set to -inf.
    masked = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=torch.float64))
    masked = torch.where(has[..., None], masked, torch.zeros((), dtype=torch.float64))
    L = torch.logsumexp(masked, dim=-1)
    w = torch.exp(masked - L[..., None])                                   # softmax over the mask; 0 outside
    value = torch.where(has[..., None], w @ values, torch.zeros((), dtype=torch.float64))
    L = torch.where(has, L, torch.tensor(float("-inf"), dtype=torch.float64))
    return L, value, has


def dsa(q, k, v, c: Case, detach_scores: bool = False, detach_group_scores: bool = False,
        coarse: bool = True) -> dict:
    """q, k, v: (B, T, H, D) float64. out (B, T, H, D), lse (B, H, T) and the plan.
    detach_scores cuts the gradient of c and cg, detach_group_scores that of cg only;
    coarse=False computes without the coarse step (every row as an inactive one)."""
    qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))          # (B, H, T, D)
    B, H, T, D = qh.shape
    nkb, G = -(-T // c.block), c.group
    window, cand = block_layout(c)
    kbar, vbar, lens = summaries(kh, vh, c)
    scores = qh @ kbar.transpose(-1, -2) / math.sqrt(D) + torch.log(lens)   # (B, H, T, nkb)
    if detach_scores:
        scores = scores.detach()
    # What selection ranks the blocks by: c itself, or the box bound (the summary uses c either way).
    assert c.rank in ("mean", "bound"), f"{c.name}: rank {c.rank!r}"
    rank = scores.detach() if c.rank == "mean" else box_bounds(qh, kh, block_spans(c))   # (B, H, T, nkb)
    n_top = top_blocks(c, T)

    # Coarse step: rows that run it keep their m best whole groups; the blocks of the
    # other (unkept) whole groups leave the block level and are summarised per group.
    ng = num_groups(c) if coarse else 0
    coarse_mask = torch.zeros(B, H, T, nkb, dtype=torch.bool)
    if ng > 0:
        whole, active = group_layout(cand, c)
        gkbar, gvbar, glens = group_summaries(kh, vh, c)
        gscores = qh @ gkbar.transpose(-1, -2) / math.sqrt(D) + torch.log(glens)   # (B, H, T, ng)
        if detach_scores or detach_group_scores:
            gscores = gscores.detach()
        grank = gscores.detach() if c.rank == "mean" else box_bounds(qh, kh, group_spans(c))   # (B, H, T, ng)
        contest = whole & active[:, None]                                 # (T, ng)
        kept = pick_top(grank, contest, kept_groups(c, T))
        unkept = contest & ~kept                                          # (B, H, T, ng)
        coarse_mask[..., :ng * G] = unkept.repeat_interleave(G, dim=-1)
    else:
        active = torch.zeros(T, dtype=torch.bool)
    fine = cand & ~coarse_mask                                            # (B, H, T, nkb)
    chosen = pick_top(rank, fine, n_top)
    selection = chosen | window                                           # (B, H, T, nkb)

    cols_kb = torch.arange(T) // c.block
    allowed = selection[:, :, :, cols_kb]                                 # (B, H, T, T)
    if c.causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    logits = (qh @ kh.transpose(-1, -2) / math.sqrt(D)).masked_fill(~allowed, float("-inf"))

    res = dict(selection=selection, candidate=cand.expand_as(selection), scores=scores, rank=rank,
               fine=fine, coarse=coarse_mask, active=active)
    if ng > 0:
        res.update(group_scores=gscores, group_rank=grank, kept=kept & contest, unkept=unkept)
    if c.summary:
        # Block part (unselected fine candidates) and group part (unkept groups) are
        # reduced separately and then merged: a row without unkept groups keeps the
        # block part bit for bit, i.e. exactly the coarse-free computation.
        L, value, has_b = soft_summary(scores, fine & ~chosen & ~torch.isnan(scores.detach()), vbar)
        if ng > 0:
            Lg, vg, has_g = soft_summary(gscores, unkept & ~torch.isnan(gscores.detach()), gvbar)
            both = has_b & has_g
            # logaddexp of finite stand-ins: no -inf - -inf (NaN) in rows that lack a part.
            lb = torch.where(has_b, L, torch.zeros((), dtype=torch.float64))
            lg = torch.where(has_g, Lg, torch.zeros((), dtype=torch.float64))
            Lbg = torch.logaddexp(lb, lg)
            merged = torch.exp(lb - Lbg)[..., None] * value + torch.exp(lg - Lbg)[..., None] * vg
            value = torch.where(both[..., None], merged, torch.where(has_g[..., None], vg, value))
            L = torch.where(both, Lbg, torch.where(has_g, Lg, L))
        res.update(summary_logit=L, summary_value=value)
        logits = torch.cat([logits, L[..., None]], dim=-1)                  # (B, H, T, T + 1)
        values = torch.cat([vh[:, :, None].expand(-1, -1, T, -1, -1),
                            value[:, :, :, None]], dim=-2)                   # (B, H, T, T + 1, D)
    else:
        values = vh[:, :, None].expand(-1, -1, T, -1, -1)
    lse = torch.logsumexp(logits, dim=-1)                                 # (B, H, T)
    assert torch.isfinite(lse).all(), f"{c.name}: a row without keys (not expected in these cases)"
    p = torch.exp(logits - lse[..., None])
    out = (p[..., None] * values).sum(dim=-2)                             # (B, H, T, D)
    res.update(out=out.permute(0, 2, 1, 3), lse=lse)
    return res


def dense(q, k, v, causal: bool):
    """Plain softmax attention, independent of everything above. (B, T, H, D) -> out, lse."""
    qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    T, D = q.shape[1], q.shape[3]
    s = qh @ kh.transpose(-1, -2) / math.sqrt(D)
    if causal:
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, dim=-1) @ vh).permute(0, 2, 1, 3), torch.logsumexp(s, dim=-1)


# ------------------------------------------------------------------------- checks

def check_close(what: str, got, want, rtol: float, atol: float) -> None:
    got = np.asarray(got.detach() if torch.is_tensor(got) else got, dtype=np.float64)
    want = np.asarray(want.detach() if torch.is_tensor(want) else want, dtype=np.float64)
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} values differ, max abs error "
                           f"{err.max():.3e} (rtol {rtol}, atol {atol})")


def make_inputs(c: Case, seed: int):
    g = torch.Generator().manual_seed(seed)
    B, T, H, D, nkb = c.B, c.T, c.H, c.D, -(-c.T // c.block)
    blk = torch.arange(T) // c.block

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    # A per-(b, h) component shared by all queries spreads the block scores further.
    q = randn(B, T, H, D) + randn(B, 1, H, D)
    if c.inputs in ("block_constant", "group_constant"):
        unit = blk
        if c.inputs == "group_constant":
            # Tokens of group g share unit g; blocks after the last group stay units of their own.
            ng = num_groups(c)
            unit = torch.where(blk < ng * c.group, blk // c.group, blk - ng * c.group + ng)
        n_units = int(unit.max()) + 1
        k = randn(B, n_units, H, D)[:, unit]
        v = randn(B, n_units, H, D)[:, unit]
    else:
        # A per-block offset spreads the block scores apart, so the top-k choice
        # is well separated (float32 cannot flip it) and attention is peaked.
        k = randn(B, T, H, D) + randn(B, nkb, H, D)[:, blk]
        v = randn(B, T, H, D)
    dout = randn(B, T, H, D)
    # float32 values, computed in float64: the F32 file holds exactly these inputs.
    return [x.float().double().contiguous() for x in (q, k, v, dout)]


def grads(q, k, v, dout, c: Case, **kw):
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    res = dsa(*leaves, c, **kw)
    (res["out"] * dout).sum().backward()
    return res, [x.grad for x in leaves]


def coarse_rows(res: dict, c: Case) -> int:
    """(b, h, t) rows where the coarse step ran (it depends on t only)."""
    return int(res["active"].sum()) * c.B * c.H


def selection_margin(res: dict) -> float:
    """Smallest gap between the lowest selected and the highest unselected fine candidate ranking
    value (c, or the bound with rank = "bound")."""
    s, fine, sel = res["rank"], res["fine"], res["selection"]
    picked = fine & sel
    rest = fine & ~sel
    lo = torch.where(picked, s, torch.tensor(float("inf"), dtype=torch.float64)).amin(dim=-1)
    hi = torch.where(rest, s, torch.tensor(float("-inf"), dtype=torch.float64)).amax(dim=-1)
    both = picked.any(dim=-1) & rest.any(dim=-1)
    return float((lo - hi)[both].min()) if both.any() else math.inf


def group_margin(res: dict) -> float:
    """Smallest gap, over the rows that ran the coarse step, between the lowest kept and the
    highest unkept whole-group ranking value (cg, or the bound with rank = "bound")."""
    if "group_rank" not in res or not res["active"].any():
        return math.inf
    s, kept, unkept = res["group_rank"], res["kept"], res["unkept"]
    lo = torch.where(kept, s, torch.tensor(float("inf"), dtype=torch.float64)).amin(dim=-1)
    hi = torch.where(unkept, s, torch.tensor(float("-inf"), dtype=torch.float64)).amax(dim=-1)
    rows = res["active"].expand_as(lo)
    assert (kept.any(dim=-1) & unkept.any(dim=-1))[rows].all(), "an active row without kept and unkept groups"
    return float((lo - hi)[rows].min())


def finite_difference_check(c: Case, q, k, v, dout, g, probes: int) -> None:
    base = dsa(q, k, v, c)

    def f(dq, dk, dv):
        res = dsa(q + dq, k + dk, v + dv, c)
        assert torch.equal(res["selection"], base["selection"]), \
            f"{c.name}: selection changed under a finite-difference step"
        assert torch.equal(res["coarse"], base["coarse"]), \
            f"{c.name}: unkept groups changed under a finite-difference step"
        return float((res["out"] * dout).sum())

    gen = torch.Generator().manual_seed(SEED + 99)
    h = 1e-5
    # A random direction through all of q, k, v at once...
    dirs = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in (q, k, v)]
    fd = (f(*(h * d for d in dirs)) - f(*(-h * d for d in dirs))) / (2 * h)
    an = sum(float((gi * d).sum()) for gi, d in zip(g, dirs))
    check_close(f"{c.name}: directional derivative vs finite difference", an, fd, 1e-7, 1e-9)
    # ...and single entries of each tensor.
    for ti, name in enumerate(("q", "k", "v")):
        for _ in range(probes):
            idx = tuple(int(torch.randint(0, n, (1,), generator=gen)) for n in q.shape)
            e = [torch.zeros_like(q) for _ in range(3)]
            e[ti][idx] = h
            fd = (f(*e) - f(*(-x for x in e))) / (2 * h)
            check_close(f"{c.name}: d{name}{list(idx)} vs finite difference", float(g[ti][idx]), fd, 1e-6, 1e-9)


def dense_check(c: Case, q, k, v, dout, res, dq, dk, dv) -> None:
    """DSA (forward and gradients) equals an independent dense float64 attention."""
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    d_out, d_lse = dense(*leaves, c.causal)
    (d_out * dout).sum().backward()
    check_close(f"{c.name}: out vs dense", res["out"], d_out, 1e-12, 1e-12)
    check_close(f"{c.name}: lse vs dense", res["lse"], d_lse, 1e-12, 1e-12)
    for n, a, b in zip(("dq", "dk", "dv"), (dq, dk, dv), leaves):
        check_close(f"{c.name}: {n} vs dense", a, b.grad, 1e-10, 1e-12)


def equivalence_check(c: Case, q, k, v, dout) -> None:
    """group=1 and group_keep >= #groups switch the coarse step off in every row: both must
    reproduce the coarse-free computation bit for bit, which the real configuration must not."""
    flat, flat_g = grads(q, k, v, dout, c, coarse=False)
    real = dsa(q, k, v, c)
    assert not torch.equal(real["out"], flat["out"]), f"{c.name}: the coarse step changes nothing"
    keys = ["out", "lse", "selection", "candidate", "fine", "coarse", "scores"]
    keys += ["summary_logit", "summary_value"] if c.summary else []
    for variant in (replace(c, group=1), replace(c, group_keep=num_groups(c))):
        res, g = grads(q, k, v, dout, variant)
        tag = f"{c.name} with group {variant.group}, group_keep {variant.group_keep}"
        assert coarse_rows(res, variant) == 0, f"{tag}: the coarse step ran"
        for key in keys:
            assert torch.equal(res[key], flat[key]), f"{tag}: {key} differs from the coarse-free result"
        for n, a, b in zip(("dq", "dk", "dv"), g, flat_g):
            assert torch.equal(a, b), f"{tag}: {n} differs from the coarse-free result"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write dsa_ref.safetensors into")
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    tensors: list[tuple[str, np.ndarray]] = []
    meta_cases = []
    f32 = lambda t: t.detach().numpy().astype(np.float32)      # noqa: E731
    i32 = lambda t: t.numpy().astype(np.int32)                 # noqa: E731
    for ci, c in enumerate(CASES):
        assert 0 < c.keep_long <= c.keep_short <= 1 and 2 <= c.short_len < c.long_len
        assert c.group >= 1 and c.group_keep >= 1
        q, k, v, dout = make_inputs(c, SEED + 1000 * c.redraw + ci)
        res, (dq, dk, dv) = grads(q, k, v, dout, c)
        sel, cand = res["selection"], res["candidate"]
        n_top = top_blocks(c, c.T)
        full = bool((sel | ~cand).all())
        if c.summary:
            summarised = int(torch.isfinite(res["summary_logit"]).sum())
        else:
            summarised = int((cand & ~sel).any(dim=-1).sum())
        margin = selection_margin(res)
        n_coarse = coarse_rows(res, c)
        g_margin = group_margin(res)

        # Every case must be what its name promises.
        if "full" in c.name:
            assert full, f"{c.name}: the budget leaves candidates unselected"
        else:
            assert not full and summarised > 0, f"{c.name}: the budget selects every candidate"
        if "coarse" in c.name:
            assert n_coarse > 0, f"{c.name}: the coarse step never runs"
        else:
            assert n_coarse == 0, f"{c.name}: the coarse step runs in {n_coarse} rows"
        if "m3" in c.name:
            assert kept_groups(c, c.T) == 3 > c.group_keep, f"{c.name}: m does not come from ceil(top / G)"
        assert margin > MIN_MARGIN, (f"{c.name}: selection margin {margin:.2e} too small for a float32 "
                                     f"comparison; change the seed")
        assert g_margin > MIN_MARGIN, (f"{c.name}: group margin {g_margin:.2e} too small for a float32 "
                                       f"comparison; change the seed")
        # A bound case must really rank differently from the mean ranking: its selection (and,
        # where the coarse step runs, its unkept groups) differ from those of the same case
        # with rank = "mean" in a good share of the rows where ranking leaves something out.
        rank_rows, rank_note = 0, ""
        if c.rank == "bound":
            as_mean = dsa(q, k, v, replace(c, rank="mean"))
            choosing = (cand & ~sel).any(dim=-1)                          # (B, H, T)
            assert torch.equal(choosing, (as_mean["candidate"] & ~as_mean["selection"]).any(dim=-1)), \
                f"{c.name}: the ranking changed which rows leave candidates out"
            rank_rows = int((as_mean["selection"] != sel).any(dim=-1).sum())
            share = rank_rows / int(choosing.sum())
            assert share >= MIN_RANK_DIFFERENCE, (f"{c.name}: the bound ranking selects like the mean "
                                                  f"ranking in all but {share:.0%} of the rows")
            rank_note = f", selection differs from rank=mean in {share:.0%} of the rows"
            # The bound is one: no token logit of a block (group) exceeds it.
            qh, kh = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3)
            logits = qh @ kh.transpose(-1, -2) / math.sqrt(c.D)
            for what, spans, bound in (("block", block_spans(c), res["rank"]),
                                       ("group", group_spans(c), res.get("group_rank"))):
                if spans:
                    top_logit = torch.stack([logits[..., lo:hi].amax(dim=-1) for lo, hi in spans], dim=-1)
                    assert (bound >= top_logit - 1e-12).all(), f"{c.name}: a {what} bound below a token logit"
            if n_coarse > 0:
                g_rows = int((as_mean["coarse"] != res["coarse"]).any(dim=-1).sum())
                g_share = g_rows / n_coarse
                assert g_share >= MIN_RANK_DIFFERENCE, (f"{c.name}: the bound ranking drops the same groups "
                                                        f"as the mean ranking in all but {g_share:.0%} of "
                                                        f"the coarse rows")
                rank_note += f", unkept groups in {g_share:.0%} of the coarse rows"

        # Dense float64 attention where DSA must reproduce it exactly.
        if "full" in c.name or c.inputs == "block_constant":
            dense_check(c, q, k, v, dout, res, dq, dk, dv)
        if c.summary and not full:
            # The scorer learns: its gradient changes dq and dk measurably...
            _, (dq0, dk0, _) = grads(q, k, v, dout, c, detach_scores=True)
            for n, a, b in (("dq", dq, dq0), ("dk", dk, dk0)):
                rel = float((a - b).norm() / a.norm())
                assert rel > 1e-3, f"{c.name}: the summary scores contribute only {rel:.1e} of {n}"
            if n_coarse > 0:
                # ...and so does the group scorer on its own.
                _, (dq0, dk0, _) = grads(q, k, v, dout, c, detach_group_scores=True)
                for n, a, b in (("dq", dq, dq0), ("dk", dk, dk0)):
                    rel = float((a - b).norm() / a.norm())
                    assert rel > 1e-3, f"{c.name}: the group scores contribute only {rel:.1e} of {n}"
        if c.name in FD_CASES:
            finite_difference_check(c, q, k, v, dout, [dq, dk, dv], FD_CASES[c.name])
        if c.name == EQUIVALENCE_CASE:
            equivalence_check(c, q, k, v, dout)

        p = c.name + "."
        tensors += [(p + "q", f32(q)), (p + "k", f32(k)), (p + "v", f32(v)), (p + "dout", f32(dout)),
                    (p + "out", f32(res["out"])), (p + "lse", f32(res["lse"])),
                    (p + "dq", f32(dq)), (p + "dk", f32(dk)), (p + "dv", f32(dv)),
                    (p + "selection", i32(sel)), (p + "candidate", i32(cand)),
                    (p + "coarse", i32(res["coarse"])), (p + "scores", f32(res["scores"]))]
        if c.summary:
            tensors += [(p + "summary_logit", f32(res["summary_logit"])),
                        (p + "summary_value", f32(res["summary_value"]))]
        if c.rank == "bound":
            tensors += [(p + "bound", f32(res["rank"]))]
        meta_cases.append(dict(asdict(c), budget=key_budget(c, c.T), top_blocks=n_top,
                               window_blocks=window_blocks(c), groups=num_groups(c),
                               kept_groups=kept_groups(c, c.T), coarse_rows=n_coarse,
                               selection_margin=margin if math.isfinite(margin) else None,  # JSON has no inf
                               group_margin=g_margin if math.isfinite(g_margin) else None,
                               rank_differs_rows=rank_rows,
                               equals_dense=("full" in c.name or c.inputs == "block_constant")))
        print(f"  {c.name}: top_blocks {n_top}, {summarised} rows with unselected candidates, "
              f"{n_coarse} coarse rows, selection margin {margin:.3g}, group margin {g_margin:.3g}"
              f"{rank_note}")

    # Keys and values constant inside each group: whatever is kept and selected, the block
    # and group summaries then reproduce dense attention exactly.
    for c in GROUP_CONSTANT_CHECKS:
        q, k, v, dout = make_inputs(c, SEED + 1000 * c.redraw + 500)
        res, (dq, dk, dv) = grads(q, k, v, dout, c)
        assert coarse_rows(res, c) > 0, f"{c.name}: the coarse step never runs"
        dense_check(c, q, k, v, dout, res, dq, dk, dv)

    metadata = {"cases": json.dumps(meta_cases), "seed": str(SEED), "compute_dtype": "float64",
                "generator": "tests/reference/dsa_reference.py (PyTorch " + torch.__version__ + ")"}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / FILE_NAME
    write_safetensors(path, tensors, metadata)

    back, back_meta, order = read_safetensors(path)
    assert order == [n for n, _ in tensors], "tensor order changed on read-back"
    assert back_meta == metadata, "metadata changed on read-back"
    for n, arr in tensors:
        assert back[n].dtype == arr.dtype and back[n].shape == arr.shape, f"{n}: dtype/shape changed on read-back"
        assert np.array_equal(back[n], arr), f"{n}: values changed on read-back"

    print(f"dsa_reference: wrote {path} ({path.stat().st_size} bytes, {len(CASES)} cases, {len(tensors)} tensors), "
          f"{time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
