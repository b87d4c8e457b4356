// Compares sparta's dynamic sparse attention (DsaAttention, float32) with a
// PyTorch float64 implementation written independently from the documented
// equations (tests/reference/dsa_reference.py). Each case runs with the
// DsaConfig of its metadata (rank "mean" or "bound" among it). Per case of
// the reference file, in this order:
//   budget     dsa_key_budget / dsa_window_blocks / dsa_top_blocks equal the
//              script's values (exact integers);
//   selection  dsa_select and dsa_plan pick exactly the reference's key
//              blocks (a mismatch is reported with the ranking values
//              involved and stops the case: everything after it would
//              differ anyway);
//   summary    dsa_plan's summary logit and value (cases with summary; the
//              value only where the logit is finite);
//   forward    out, lse;
//   backward   dq, dk, dv of sum(out * dout), plus: in the fused layout the
//              padding after each token's q|k|v is left untouched;
//   decode     causal cases: DsaAttention::decode of each sequence's last
//              token equals the reference's last output row.
// Tolerance (float32 sized, scale-aware, per tensor):
//   max_i |sparta_i - ref_i| <= kRtol * max_i |ref_i|,  kRtol = 1e-5
// (-inf entries, e.g. a summary logit with nothing to summarise, must be
// -inf on both sides).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "ops/attention_dsa.h"
#include "ops/dsa_budget.h"

using namespace sparta;

namespace {

constexpr double kRtol = 1e-5;
// Fused layout: q|k|v of a token back to back, then this many unused floats
// (so that ld > 3*H*D and an out-of-slice write would be caught).
constexpr int64_t kPad = 3;
constexpr float kSentinel = -777.25f;

std::unique_ptr<SafetensorsFile> g_ref;

struct RefCase {
  std::string name;
  AttnDims d;
  DsaConfig cfg;
  bool fused = false;
  int64_t budget = 0, top_blocks = 0, window_blocks = 0;
  double margin = 0;  // smallest ranking gap selected vs unselected candidate (inf: none left out)
  bool equals_dense = false;
  int64_t coarse_rows = 0;  // rows where the reference ran the coarse (group) step
  int64_t rank_differs_rows = 0;  // rows whose selection differs from the same case ranked by "mean"
  int64_t nqb() const { return d.T; }  // every query row selects on its own
  int64_t nkb() const { return (d.T + cfg.block - 1) / cfg.block; }
};

RefCase parse_case(const nlohmann::json& j) {
  RefCase c;
  c.name = j.at("name").get<std::string>();
  c.d.B = j.at("B").get<int64_t>();
  c.d.T = j.at("T").get<int64_t>();
  c.d.H = j.at("H").get<int64_t>();
  c.d.D = j.at("D").get<int64_t>();
  c.d.causal = j.at("causal").get<bool>();
  c.fused = j.at("layout").get<std::string>() == "fused";
  c.d.ld = c.fused ? 3 * c.d.H * c.d.D + kPad : c.d.H * c.d.D;
  c.cfg.block = j.at("block").get<int64_t>();
  c.cfg.window = j.at("window").get<int64_t>();
  c.cfg.top_k = j.at("top_k").get<int64_t>();
  c.cfg.keep_short = j.at("keep_short").get<double>();
  c.cfg.keep_long = j.at("keep_long").get<double>();
  c.cfg.short_len = j.at("short_len").get<int64_t>();
  c.cfg.long_len = j.at("long_len").get<int64_t>();
  // The script's budget is the formula from the first token (no dense_len).
  c.cfg.dense_len = j.value("dense_len", int64_t{0});
  c.cfg.summary = j.at("summary").get<bool>();
  c.cfg.group = j.at("group").get<int64_t>();
  c.cfg.group_keep = j.at("group_keep").get<int64_t>();
  c.cfg.rank = j.at("rank").get<std::string>();
  c.coarse_rows = j.at("coarse_rows").get<int64_t>();
  c.rank_differs_rows = j.at("rank_differs_rows").get<int64_t>();
  c.budget = j.at("budget").get<int64_t>();
  c.top_blocks = j.at("top_blocks").get<int64_t>();
  c.window_blocks = j.at("window_blocks").get<int64_t>();
  const auto& m = j.at("selection_margin");
  c.margin = m.is_null() ? std::numeric_limits<double>::infinity() : m.get<double>();
  c.equals_dense = j.at("equals_dense").get<bool>();
  return c;
}

std::vector<RefCase> ref_cases() {
  std::vector<RefCase> out;
  for (const auto& j : nlohmann::json::parse(g_ref->metadata().at("cases"))) out.push_back(parse_case(j));
  return out;
}

std::string index_str(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t k = s.size(); k-- > 0;) idx[k] = i % s[k], i /= s[k];
  std::ostringstream os;
  os << "(";
  for (size_t k = 0; k < idx.size(); ++k) os << (k ? ", " : "") << idx[k];
  os << ")";
  return os.str();
}

// Checks max |got - want| <= kRtol * max |want| over the tensor; -inf in want
// must be -inf in got. Returns the relative error max_err / max|want| (for the log line).
double expect_close(const float* got, const float* want, const Shape& shape, const std::string& what) {
  const int64_t n = shape_numel(shape);
  double max_ref = 0, max_err = 0;
  int64_t worst = -1, inf_mismatch = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i])) {
      if (got[i] != want[i] && inf_mismatch < 0) inf_mismatch = i;
      continue;
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(e <= max_err)) max_err = e, worst = i;  // also catches NaN
  }
  EXPECT_LT(inf_mismatch, 0) << what << ": at " << index_str(inf_mismatch, shape) << " sparta "
                             << got[std::max<int64_t>(inf_mismatch, 0)] << ", torch "
                             << want[std::max<int64_t>(inf_mismatch, 0)] << " (one side infinite)";
  if (worst < 0) return 0;
  EXPECT_LE(max_err, kRtol * max_ref) << what << ": max abs error " << max_err << " at " << index_str(worst, shape)
                                      << " (sparta " << got[worst] << ", torch " << want[worst] << "), max |torch| "
                                      << max_ref << ", allowed " << kRtol * max_ref;
  return max_ref > 0 ? max_err / max_ref : max_err;
}

// q, k, v (or dq, dk, dv) in the strided layout of Attention::forward: three
// separate (B, T, H, D) buffers, or one fused buffer with ld = 3*H*D + kPad.
struct Strided {
  std::vector<float> storage[3];
  float* ptr[3];
  AttnDims d;
  bool fused;
  Strided(const Strided&) = delete;  // ptr points into storage
  Strided& operator=(const Strided&) = delete;
  Strided(const AttnDims& dims, bool is_fused) : d(dims), fused(is_fused) {
    const int64_t HD = d.H * d.D;
    for (int i = 0; i < 3; ++i) {
      if (fused && i > 0) {
        ptr[i] = storage[0].data() + i * HD;
        continue;
      }
      storage[i].assign(static_cast<size_t>(d.B * d.T * d.ld), kSentinel);
      ptr[i] = storage[i].data();
    }
  }
  void pack(int i, const float* src) {  // src: (B, T, H, D) contiguous
    const int64_t HD = d.H * d.D;
    for (int64_t r = 0; r < d.B * d.T; ++r) std::copy(src + r * HD, src + (r + 1) * HD, ptr[i] + r * d.ld);
  }
  std::vector<float> unpack(int i) const {
    const int64_t HD = d.H * d.D;
    std::vector<float> out(static_cast<size_t>(d.B * d.T * HD));
    for (int64_t r = 0; r < d.B * d.T; ++r) std::copy(ptr[i] + r * d.ld, ptr[i] + r * d.ld + HD, out.data() + r * HD);
    return out;
  }
  // Elements outside every head slice that differ from kSentinel.
  int64_t padding_touched() const {
    if (!fused) return 0;
    int64_t n = 0;
    for (int64_t r = 0; r < d.B * d.T; ++r)
      for (int64_t x = 3 * d.H * d.D; x < d.ld; ++x) n += storage[0][r * d.ld + x] != kSentinel;
    return n;
  }
};

std::string ids_str(const std::vector<int64_t>& ids) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < ids.size(); ++i) os << (i ? "," : "") << ids[i];
  os << "}";
  return os.str();
}

// Compares sel with the reference 0/1 selection; on a mismatch adds one
// failure naming each differing (b, h, query row), the two block lists, and
// the reference ranking values (c, or the bound with rank "bound") of the
// candidates next to the reference's selection margin, so a near-tie is
// recognisable. Returns true if equal.
bool expect_same_selection(const RefCase& c, const ops::BlockSelection& sel, const char* source) {
  const int64_t B = c.d.B, H = c.d.H, nqb = c.nqb(), nkb = c.nkb();
  const Shape s4{B, H, nqb, nkb};
  const int32_t* ref_sel = g_ref->get(c.name + ".selection", s4, DType::I32).data<int32_t>();
  const int32_t* cand = g_ref->get(c.name + ".candidate", s4, DType::I32).data<int32_t>();
  const bool bound = c.cfg.rank == "bound";
  const float* rank = g_ref->get(c.name + (bound ? ".bound" : ".scores"), s4).data<float>();
  EXPECT_EQ(sel.block, c.cfg.block) << source;
  EXPECT_EQ(ops::query_block(sel), 1) << source;
  if (sel.nqb != nqb || sel.offsets.size() != static_cast<size_t>(B * H * nqb + 1)) {
    ADD_FAILURE() << c.name << ": " << source << " has nqb " << sel.nqb << " and " << sel.offsets.size()
                  << " offsets, expected nqb " << nqb << " and " << B * H * nqb + 1;
    return false;
  }
  std::ostringstream msg;
  int64_t differing = 0;
  for (int64_t i = 0; i < B * H * nqb; ++i) {
    std::vector<int64_t> got, want;
    for (int64_t p = sel.offsets[i]; p < sel.offsets[i + 1]; ++p) got.push_back(sel.keys[p]);
    for (int64_t kb = 0; kb < nkb; ++kb)
      if (ref_sel[i * nkb + kb]) want.push_back(kb);
    if (got == want) continue;
    if (++differing > 5) continue;
    const int64_t b = i / (H * nqb), h = (i / nqb) % H, j = i % nqb;
    msg << "\n  (b=" << b << ", h=" << h << ", row " << j << "): sparta " << ids_str(got) << ", torch "
        << ids_str(want) << "; torch candidate " << (bound ? "bounds" : "scores") << ":";
    for (int64_t kb = 0; kb < nkb; ++kb)
      if (cand[i * nkb + kb]) msg << " " << kb << ":" << rank[i * nkb + kb];
  }
  if (differing > 0)
    ADD_FAILURE() << c.name << ": " << source << " selects other key blocks than the reference in " << differing
                  << " of " << B * H * nqb << " rows (reference selection margin " << c.margin
                  << "; float32 score error is ~1e-6, so a margin far above that is no near-tie):" << msg.str();
  return differing == 0;
}

void run_case(const RefCase& c) {
  const AttnDims& d = c.d;
  const int64_t B = d.B, T = d.T, H = d.H, D = d.D, nqb = c.nqb();
  const Shape btHD{B, T, H, D};
  const std::string& n = c.name;
  SCOPED_TRACE(n + (c.fused ? " (fused layout)" : " (separate layout)"));

  // Budget: integers computed from the documented formula by the script.
  EXPECT_EQ(dsa_key_budget(c.cfg, T), c.budget);
  EXPECT_EQ(dsa_window_blocks(c.cfg), c.window_blocks);
  EXPECT_EQ(dsa_top_blocks(c.cfg, T), c.top_blocks);

  Strided in(d, c.fused);
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) in.pack(i, g_ref->get(n + "." + names[i], btHD).data<float>());
  const float *q = in.ptr[0], *k = in.ptr[1], *v = in.ptr[2];

  // Selection first: if it differs, nothing after it is comparable.
  if (!expect_same_selection(c, dsa_select(q, k, d, c.cfg), "dsa_select")) return;
  DsaPlan plan = dsa_plan(q, k, v, d, c.cfg);
  double e_sl = 0, e_sv = 0;
  if (c.cfg.summary) {
    ASSERT_EQ(plan.summary_logit.size(), static_cast<size_t>(B * H * nqb));
    ASSERT_EQ(plan.summary_value.size(), static_cast<size_t>(B * H * nqb * D));
    const float* ref_logit = g_ref->get(n + ".summary_logit", {B, H, nqb}).data<float>();
    e_sl = expect_close(plan.summary_logit.data(), ref_logit, {B, H, nqb}, "summary_logit");
    // The value of a row with nothing to summarise (logit -inf) is
    // unspecified: compare only the others.
    std::vector<float> got_v = plan.summary_value;
    std::vector<float> want_v(g_ref->get(n + ".summary_value", {B, H, nqb, D}).data<float>(),
                              g_ref->get(n + ".summary_value").data<float>() + B * H * nqb * D);
    for (int64_t i = 0; i < B * H * nqb; ++i)
      if (std::isinf(ref_logit[i]))
        std::fill_n(got_v.data() + i * D, D, 0.0f), std::fill_n(want_v.data() + i * D, D, 0.0f);
    e_sv = expect_close(got_v.data(), want_v.data(), {B, H, nqb, D}, "summary_value");
  } else {
    EXPECT_TRUE(plan.summary_logit.empty() && plan.summary_value.empty()) << "summary off but dsa_plan made one";
  }

  DsaAttention attn(c.cfg);
  std::vector<float> out(static_cast<size_t>(B * T * H * D)), lse(static_cast<size_t>(B * H * T));
  attn.forward(out.data(), lse.data(), q, k, v, d);
  const double e_out = expect_close(out.data(), g_ref->get(n + ".out", btHD).data<float>(), btHD, "out");
  const double e_lse = expect_close(lse.data(), g_ref->get(n + ".lse", {B, H, T}).data<float>(), {B, H, T}, "lse");

  Strided grad(d, c.fused);
  attn.backward(grad.ptr[0], grad.ptr[1], grad.ptr[2], g_ref->get(n + ".dout", btHD).data<float>(), out.data(),
                lse.data(), q, k, v, d);
  double e_grad[3];
  for (int i = 0; i < 3; ++i) {
    const std::string g = std::string("d") + names[i];
    e_grad[i] = expect_close(grad.unpack(i).data(), g_ref->get(n + "." + g, btHD).data<float>(), btHD, g);
  }
  EXPECT_EQ(grad.padding_touched(), 0) << "backward wrote outside the q/k/v head slices of the fused buffer";
  EXPECT_EQ(in.padding_touched(), 0) << "forward/backward modified the input buffer";

  // Decode of each sequence's last token against the full histories.
  double e_dec = 0;
  if (d.causal) {
    const float* ref_out = g_ref->get(n + ".out", btHD).data<float>();
    const float *rq = g_ref->get(n + ".q", btHD).data<float>(), *rk = g_ref->get(n + ".k", btHD).data<float>(),
                *rv = g_ref->get(n + ".v", btHD).data<float>();
    std::vector<float> dec(static_cast<size_t>(H * D));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t off = b * T * H * D;
      attn.decode(dec.data(), rq + off + (T - 1) * H * D, rk + off, rv + off, T, H, D);
      e_dec = std::max(e_dec, expect_close(dec.data(), ref_out + off + (T - 1) * H * D, {H, D},
                                           "decode out of sequence " + std::to_string(b)));
    }
  }
  std::printf("[ dsa-ref  ] %-36s rel. error: summary %.1e/%.1e out %.1e lse %.1e dq %.1e dk %.1e dv %.1e decode %.1e\n",
              n.c_str(), e_sl, e_sv, e_out, e_lse, e_grad[0], e_grad[1], e_grad[2], e_dec);
}

class DsaReferenceCase : public ::testing::Test {
 public:
  explicit DsaReferenceCase(RefCase c) : c_(std::move(c)) {}
  void TestBody() override { run_case(c_); }

 private:
  RefCase c_;
};

}  // namespace

// The file must hold the variety the comparison is meant to cover, so that a
// generator that silently lost cases cannot make this suite pass vacuously.
TEST(DsaTorchReference, FileCoversTheIntendedCases) {
  int causal = 0, bidir = 0, summary = 0, no_summary = 0, dense = 0, sparse_summary = 0, ragged = 0, fused = 0;
  int coarse_causal = 0, coarse_bidir = 0, coarse_summary = 0;
  int bound = 0, bound_coarse_causal = 0, bound_coarse_bidir = 0, bound_summary = 0;
  for (const RefCase& c : ref_cases()) {
    if (c.coarse_rows > 0) {
      (c.d.causal ? coarse_causal : coarse_bidir)++;
      coarse_summary += c.cfg.summary;
    }
    // A bound case counts only if its ranking changed the selection somewhere.
    if (c.cfg.rank == "bound" && c.rank_differs_rows > 0) {
      ++bound;
      if (c.coarse_rows > 0) (c.d.causal ? bound_coarse_causal : bound_coarse_bidir)++;
      bound_summary += c.cfg.summary;
    }
    (c.d.causal ? causal : bidir)++;
    (c.cfg.summary ? summary : no_summary)++;
    dense += c.equals_dense;
    sparse_summary += c.cfg.summary && std::isfinite(c.margin);
    ragged += c.d.T % c.cfg.block != 0;
    fused += c.fused;
  }
  EXPECT_GE(causal, 3);
  EXPECT_GE(bidir, 3);
  EXPECT_GE(summary, 3);
  EXPECT_GE(no_summary, 2);
  EXPECT_GE(dense, 2);
  EXPECT_GE(sparse_summary, 3);
  EXPECT_GE(ragged, 2);
  EXPECT_GE(fused, 2);
  EXPECT_GE(coarse_causal, 2);
  EXPECT_GE(coarse_bidir, 2);
  EXPECT_GE(coarse_summary, 3);
  EXPECT_GE(bound, 3);
  EXPECT_GE(bound_coarse_causal, 1);
  EXPECT_GE(bound_coarse_bidir, 1);
  EXPECT_GE(bound_summary, 2);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: sparta_dsa_reference_tests DSA_REFERENCE.safetensors\n");
    return 2;
  }
  try {
    g_ref = std::make_unique<SafetensorsFile>(SafetensorsFile::read(argv[1]));
    for (const RefCase& c : ref_cases())
      ::testing::RegisterTest("DsaTorchReference", c.name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                              [c]() -> ::testing::Test* { return new DsaReferenceCase(c); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparta_dsa_reference_tests: cannot load %s: %s\n", argv[1], e.what());
    return 1;
  }
  return RUN_ALL_TESTS();
}
