// Decoding with DSA: the last row of a causal sequence, planned exactly as
// dsa_plan plans it, against a KV cache. DsaDecodeMemo keeps the means (and
// key boxes) of the cache's complete blocks and groups between steps, so a
// step costs O(len/block) instead of O(len). decode_head, the exact softmax
// of one head over ranges of cached keys, also serves WindowAttention.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/error.h"
#include "ops/attention_dense.h"
#include "ops/attention_dsa_internal.h"
#include "ops/attention_rows.h"

namespace sparta {
namespace dsa_internal {

using ops::dot_row;

void decode_head(float* out, const float* q, const KVPages& kv, int64_t h, int64_t ld, int64_t D,
                 const std::vector<KeyRange>& ranges, std::vector<float>& s, float extra_logit,
                 const float* extra_value) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  s.clear();
  float m = extra_logit;
  for (const KeyRange& r : ranges)
    kv.for_each_run(r.k0, r.k1, ld, [&](const float* K, const float*, int64_t, int64_t n) {
      for (int64_t j = 0; j < n; ++j) {
        s.push_back(scale * dot_row(q, K + j * ld + h * D, D));
        m = std::max(m, s.back());
      }
    });
  std::fill(out, out + D, 0.0f);
  float l = 0.0f;
  if (extra_logit > -std::numeric_limits<float>::infinity()) {
    l = std::exp(extra_logit - m);
    axpy_row(out, l, extra_value, D);
  }
  size_t i = 0;
  for (const KeyRange& r : ranges)
    kv.for_each_run(r.k0, r.k1, ld, [&](const float*, const float* V, int64_t, int64_t n) {
      for (int64_t j = 0; j < n; ++j, ++i) {
        const float p = std::exp(s[i] - m);
        l += p;
        axpy_row(out, p, V + j * ld + h * D, D);
      }
    });
  // l >= 1 whenever a key exists (the max contributes exp(0)); ranges are never empty here.
  const float inv = 1.0f / l;
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

}  // namespace dsa_internal

using namespace dsa_internal;

namespace {

// Mean key and value of the complete blocks [0, blocks) of one sequence's
// cache, (blocks, H, D) each, and of the groups made of them, (groups, H,
// D), computed by the same mean_rows and group_mean as forward; with bound
// ranking also the keys' per-dimension max and min (minmax_rows,
// group_minmax).
class DsaDecodeMemo final : public DecodeMemo {
 public:
  DsaDecodeMemo(int64_t block, bool bound) : block_(block), bound_(bound) {}
  void truncate(int64_t len) override {
    blocks_ = std::min(blocks_, len / block_);
    groups_ = 0;  // recomputed from the block means on the next extend (cheap)
  }
  // Makes blocks [0, need) available (need <= complete blocks of the cache)
  // and every group of s made of them.
  // Each block lies within one page of kv (decode_paged checks it).
  void extend(const KVPages& kv, int64_t need, const DsaShape& s, int64_t H, int64_t D) {
    if (H != H_ || D != D_ || s.G != G_) blocks_ = 0, groups_ = 0, H_ = H, D_ = D, G_ = s.G;
    const int64_t ld = H * D;
    if (need > blocks_) {
      grow(kmean_, vmean_, need * ld);
      if (bound_) grow(kmax_, kmin_, need * ld);
      const int64_t from = blocks_;
#pragma omp parallel for schedule(static) if ((need - from) * block_ * ld >= (int64_t{1} << 16))
      for (int64_t h = 0; h < H; ++h)
        for (int64_t kb = from; kb < need; ++kb) {
          const float* K = kv.key(kb * block_, ld) + h * D;
          const float* V = kv.value(kb * block_, ld) + h * D;
          mean_rows(kmean_.data() + (kb * H + h) * D, K, 0, block_, ld, D);
          mean_rows(vmean_.data() + (kb * H + h) * D, V, 0, block_, ld, D);
          if (bound_)
            minmax_rows(kmax_.data() + (kb * H + h) * D, kmin_.data() + (kb * H + h) * D, K, 0, block_, ld, D);
        }
      blocks_ = need;
    }
    const int64_t groups = s.ng > 0 ? std::min(s.ng, need / s.G) : 0;
    if (groups > groups_) {
      grow(kgroup_, vgroup_, groups * ld);
      if (bound_) grow(gmax_, gmin_, groups * ld);
      for (int64_t g = groups_; g < groups; ++g)
        for (int64_t h = 0; h < H; ++h) {
          group_mean(kgroup_.data() + (g * H + h) * D, kmean_.data() + h * D, ld, s, g, D);
          group_mean(vgroup_.data() + (g * H + h) * D, vmean_.data() + h * D, ld, s, g, D);
          if (bound_)
            group_minmax(gmax_.data() + (g * H + h) * D, gmin_.data() + (g * H + h) * D, kmax_.data() + h * D,
                         kmin_.data() + h * D, ld, s, g, D);
        }
      groups_ = groups;
    }
  }
  // Head h's rows (stride H * D): block kb at kmean(h) + kb * H * D, group g
  // at kgroup(h) + g * H * D.
  const float* kmean(int64_t h) const { return kmean_.data() + h * D_; }
  const float* vmean(int64_t h) const { return vmean_.data() + h * D_; }
  const float* kgroup(int64_t h) const { return kgroup_.data() + h * D_; }
  const float* vgroup(int64_t h) const { return vgroup_.data() + h * D_; }
  // Head h's boxes for bound ranking (empty without it).
  RankBoxes boxes(int64_t h) const {
    if (!bound_) return {};
    return {kmax_.data() + h * D_,
            kmin_.data() + h * D_,
            gmax_.data() + h * D_,
            gmin_.data() + h * D_,
            H_ * D_,
            H_ * D_};
  }

 private:
  static void grow(std::vector<float>& a, std::vector<float>& b, int64_t size) {
    if (static_cast<int64_t>(a.size()) >= size) return;
    a.resize(std::max(static_cast<size_t>(size), 2 * a.size()));
    b.resize(a.size());
  }
  int64_t block_;
  bool bound_;
  int64_t blocks_ = 0, groups_ = 0, H_ = 0, D_ = 0, G_ = 0;
  std::vector<float> kmean_, vmean_, kgroup_, vgroup_, kmax_, kmin_, gmax_, gmin_;
};

}  // namespace

std::unique_ptr<DecodeMemo> DsaAttention::make_decode_memo() const {
  return std::make_unique<DsaDecodeMemo>(cfg_.block, cfg_.rank == "bound");
}

void DsaAttention::decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                                DecodeMemo* memo_base) {
  check_decode_args(kv, H, D, "attention.dsa");
  const int64_t len = kv.len;
  // Block summaries read each block's rows from one page.
  SPARTA_CHECK(kv.page_tokens % cfg_.block == 0 || kv.page_tokens >= len,
               "[attention.dsa] decode needs cache pages of a multiple of the key block (", cfg_.block,
               " positions), got pages of ", kv.page_tokens);
  DsaDecodeMemo* memo = nullptr;
  if (memo_base) {
    memo = dynamic_cast<DsaDecodeMemo*>(memo_base);
    SPARTA_CHECK(memo, "[attention.dsa] decode memo was made by another attention implementation");
  }
  // A budget that covers every key (short caches, dense_len): exactly dense
  // attention, on the dense decode kernel, which skips the scoring. The memo
  // is left as it is; extend() catches up on the blocks once selection starts.
  if (dsa_attends_all(cfg_, len)) {
    DenseAttention().decode_paged(out, q, kv, H, D, nullptr);
    return;
  }
  // The last row of a causal sequence of len tokens, exactly as dsa_plan
  // treats it, for one head at a time.
  const DsaShape s(cfg_, len, true);
  const int64_t ld = H * D, t = len - 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  int64_t w0, w1, gl, gr;
  s.window(t, w0, w1);
  s.whole_groups(w0, w1, gl, gr);
  const bool scored = s.top > 0 || cfg_.summary;
  // Without a caller's memo a fresh one serves this call, so that both ways
  // run the same code on the means and give the same bits.
  DsaDecodeMemo local(cfg_.block, cfg_.rank == "bound");
  if (!memo) memo = &local;
  if (scored) memo->extend(kv, w0, s, H, D);  // the candidates: blocks [0, w0)
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const float* qt = q + h * D;
    RowPlan r;
    std::vector<float> cg(static_cast<size_t>(gl)), pg(static_cast<size_t>(s.ng)),
        extra_value(static_cast<size_t>(D), 0.0f);
    if (scored) {
      for (int64_t g = 0; g < gl; ++g)  // the whole groups: every one before the window
        cg[g] =
            scale * dot_row(qt, memo->kgroup(h) + g * ld, D) + std::log(static_cast<float>(s.group_len(g)));
      r.plan(s, t, qt, cg.data(), memo->kmean(h), ld, D, cfg_.summary, pg.data(), memo->boxes(h));
      weighted_rows_sum(extra_value.data(), false, 1.0f, r.sum_p.data(), r.sum_id.data(),
                        static_cast<int64_t>(r.sum_id.size()), memo->vmean(h), ld, D);
      for (int64_t g = 0; g < gl && cfg_.summary; ++g)  // pg is 0 beyond the whole groups
        if (pg[g] != 0.0f) axpy_row(extra_value.data(), pg[g], memo->vgroup(h) + g * ld, D);
    }
    std::vector<int32_t> ids = r.far;
    for (int64_t kb = w0; kb <= w1; ++kb) ids.push_back(static_cast<int32_t>(kb));  // after every far block
    std::vector<KeyRange> ranges;
    for (int32_t kb : ids) {  // merge adjacent blocks; the last one ends at len
      const int64_t a = kb * s.block, e = std::min(len, a + s.block);
      if (!ranges.empty() && ranges.back().k1 == a)
        ranges.back().k1 = e;
      else
        ranges.push_back({a, e});
    }
    std::vector<float> sc;
    decode_head(out + h * D, qt, kv, h, ld, D, ranges, sc, r.L, extra_value.data());
  }
}

}  // namespace sparta
