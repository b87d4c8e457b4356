#pragma once
// Row-sparse attention: every query row attends its OWN list of key blocks
// (plus, optionally, its own extra key). The far part of DSA, where each
// token picks the few distant blocks its query scores best.
//
// The block-sparse kernel (block_sparse_attention.h) is fast when the rows
// of a query block share their key blocks; here rows share nothing a
// priori, and running them one by one (query blocks of one row) turns every
// product into a matrix-vector product that re-reads a whole key block per
// row. Instead, a chunk of rows is regrouped by key block: the rows that
// chose block kb are gathered into one tile and multiplied against kb once
// (one read of the block per chunk instead of per row), and each row's
// online softmax merges its blocks as they come. Backward walks each (b, h)
// by key block over the rows that chose it: one thread owns the head's dQ,
// dK and dV (no races, no atomics, thread-count independent) and computes
// each tile's scores once for all three. d.bf16_products: BF16 operands, as
// in the block-sparse kernel.
#include <cstdint>

#include "ops/attention.h"
#include "ops/block_sparse_attention.h"

namespace sparta::ops {

// Same semantics, layouts and errors as block_sparse_attention_forward with
// a selection of one-row query blocks (sel.qblock == 1, sel.nqb == T; extra
// keys (B, H, T) and (B, H, T, D)), which it reproduces up to float
// summation order. Error if sel.qblock != 1.
void row_sparse_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                  const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra = {});

// Same as block_sparse_attention_backward for such a selection; with
// `accumulate`, adds to dq, dk, dv instead of overwriting them.
void row_sparse_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                   const float* lse, const float* q, const float* k, const float* v,
                                   const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra = {},
                                   float* d_extra_logit = nullptr, float* d_extra_value = nullptr,
                                   bool accumulate = false);

}  // namespace sparta::ops
