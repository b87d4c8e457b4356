#pragma once
// Comparison helpers shared by the attention kernel tests (block-sparse and
// DSA): results of a forward + backward, relative closeness with a scale
// floor, and the element mask of a block selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/attention_reference.h"
#include "ops/block_sparse_attention.h"

namespace sparta::test {

// Forward and backward results of one implementation; dqkv has the layout
// of the inputs (every element is a gradient slice, so a sentinel left
// anywhere means an element was not written).
struct AttnResult {
  std::vector<float> out, lse, dqkv;
};

// |got - want| <= rtol * (|want| + max|want|) elementwise: rtol relative to
// the element, with an absolute floor at rtol of the tensor's scale so that
// near-zero entries (sums of many cancelling terms) are judged on that
// scale. -inf must match -inf exactly; NaN never passes.
inline void expect_rel_close(const std::vector<float>& got, const std::vector<float>& want, double rtol,
                             const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (float w : want)
    if (std::isfinite(w)) scale = std::max(scale, std::fabs(static_cast<double>(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isinf(w) && g == w) continue;
    if (!(std::fabs(g - w) <= rtol * (std::fabs(w) + scale))) {
      ADD_FAILURE() << what << ": element " << i << " got " << g << " want " << w << " (rtol " << rtol
                    << ", scale " << scale << ")";
      return;
    }
  }
}

inline void expect_results_close(const AttnResult& got, const AttnResult& want, double fwd_tol, double bwd_tol,
                                 const std::string& what) {
  expect_rel_close(got.out, want.out, fwd_tol, what + " out");
  expect_rel_close(got.lse, want.lse, fwd_tol, what + " lse");
  expect_rel_close(got.dqkv, want.dqkv, bwd_tol, what + " dqkv");
}

// The AttnMask that allows exactly the selected blocks (query blocks of
// query_block(sel) tokens, key blocks of sel.block).
inline AttnMask mask_of(const AttnDims& d, const ops::BlockSelection& sel) {
  const int64_t nkb = (d.T + sel.block - 1) / sel.block;
  auto allowed = std::make_shared<std::vector<char>>(static_cast<size_t>(d.B * d.H * sel.nqb * nkb), 0);
  for (int64_t list = 0; list < d.B * d.H * sel.nqb; ++list)
    for (int64_t j = sel.offsets[list]; j < sel.offsets[list + 1]; ++j)
      (*allowed)[static_cast<size_t>(list * nkb + sel.keys[j])] = 1;
  const int64_t H = d.H, nqb = sel.nqb, block = sel.block, qblock = ops::query_block(sel);
  return [allowed, H, nqb, nkb, block, qblock](int64_t b, int64_t h, int64_t i, int64_t j) {
    return (*allowed)[static_cast<size_t>(((b * H + h) * nqb + i / qblock) * nkb + j / block)] != 0;
  };
}

inline bool all_finite(const std::vector<float>& x) {
  return std::all_of(x.begin(), x.end(), [](float e) { return std::isfinite(e); });
}

}  // namespace sparta::test
