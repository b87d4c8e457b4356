#include "ops/attention_reference.h"

#include <cmath>
#include <limits>
#include <vector>

namespace sparta {
namespace {

// Probabilities P (T×T, row-major, double) of head (b, h); a disallowed pair
// has P = 0. lse_row gets each row's log-sum-exp (-inf when nothing allowed).
void reference_probs(std::vector<double>& P, std::vector<double>& lse_row, const float* q, const float* k,
                     const AttnDims& d, int64_t b, int64_t h, const AttnMask& allowed) {
  const int64_t T = d.T, D = d.D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const double neg_inf = -std::numeric_limits<double>::infinity();
  P.assign(static_cast<size_t>(T * T), 0.0);
  lse_row.assign(static_cast<size_t>(T), neg_inf);
  std::vector<char> ok(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    const float* qi = q + (b * T + i) * d.ld + h * D;
    double* row = P.data() + i * T;
    double mx = neg_inf;
    for (int64_t j = 0; j < T; ++j) {
      ok[j] = (!d.causal || j <= i) && (!allowed || allowed(b, h, i, j));
      if (!ok[j]) continue;
      const float* kj = k + (b * T + j) * d.ld + h * D;
      double s = 0;
      for (int64_t c = 0; c < D; ++c) s += static_cast<double>(qi[c]) * kj[c];
      row[j] = s * scale;
      mx = std::max(mx, row[j]);
    }
    if (mx == neg_inf) continue;  // no allowed key: P row stays 0
    double sum = 0;
    for (int64_t j = 0; j < T; ++j)
      if (ok[j]) sum += std::exp(row[j] - mx);
    lse_row[i] = mx + std::log(sum);
    for (int64_t j = 0; j < T; ++j) row[j] = ok[j] ? std::exp(row[j] - lse_row[i]) : 0.0;
  }
}

}  // namespace

void attention_reference_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                 const AttnDims& d, const AttnMask& allowed) {
  check_attn_dims(d, "attention_reference");
  const int64_t T = d.T, H = d.H, D = d.D;
  std::vector<double> P, lse_row;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      reference_probs(P, lse_row, q, k, d, b, h, allowed);
      for (int64_t i = 0; i < T; ++i) {
        lse[(b * H + h) * T + i] = static_cast<float>(lse_row[i]);
        float* oi = out + ((b * T + i) * H + h) * D;
        for (int64_t c = 0; c < D; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < T; ++j) acc += P[i * T + j] * v[(b * T + j) * d.ld + h * D + c];
          oi[c] = static_cast<float>(acc);
        }
      }
    }
}

void attention_reference_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                  const float* k, const float* v, const AttnDims& d, const AttnMask& allowed) {
  check_attn_dims(d, "attention_reference");
  const int64_t T = d.T, H = d.H, D = d.D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> P, lse_row, dS(static_cast<size_t>(T * T));
  auto at = [&](const float* base, int64_t b, int64_t t, int64_t h) { return base + (b * T + t) * d.ld + h * D; };
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      reference_probs(P, lse_row, q, k, d, b, h, allowed);
      // dP_ij = dO_i·V_j;  dS_ij = P_ij (dP_ij - Σ_j' P_ij' dP_ij').
      for (int64_t i = 0; i < T; ++i) {
        const float* doi = dout + ((b * T + i) * H + h) * D;
        double di = 0;
        for (int64_t j = 0; j < T; ++j) {
          double dp = 0;
          if (P[i * T + j] != 0.0) {
            const float* vj = at(v, b, j, h);
            for (int64_t c = 0; c < D; ++c) dp += static_cast<double>(doi[c]) * vj[c];
          }
          dS[i * T + j] = dp;
          di += P[i * T + j] * dp;
        }
        for (int64_t j = 0; j < T; ++j) dS[i * T + j] = P[i * T + j] * (dS[i * T + j] - di);
      }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < D; ++c) {
          double gq = 0, gk = 0, gv = 0;
          for (int64_t j = 0; j < T; ++j) gq += dS[t * T + j] * at(k, b, j, h)[c];
          for (int64_t i = 0; i < T; ++i) {
            gk += dS[i * T + t] * at(q, b, i, h)[c];
            gv += P[i * T + t] * dout[((b * T + i) * H + h) * D + c];
          }
          const int64_t off = (b * T + t) * d.ld + h * D + c;
          dq[off] = static_cast<float>(scale * gq);
          dk[off] = static_cast<float>(scale * gk);
          dv[off] = static_cast<float>(gv);
        }
    }
}

}  // namespace sparta
