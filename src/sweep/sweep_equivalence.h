#pragma once
// Which runs of a sweep train the same model: a grid can name settings that
// change nothing, e.g. model.dsa.top_k under dense attention, or a DSA
// budget that already covers the whole context (at context 128 DSA attends
// every key, exactly like dense attention). Such runs differ only by
// rounding and timing noise, so the sweep says so instead of letting noise
// pick a "best" run. Pure functions of the resolved configs (no training).
#include <cstdint>
#include <string>
#include <vector>

#include "run/config.h"

namespace sparta {

// The attention a config trains and evaluates with at T = model.context, as
// the kernels see it: "dense" for dense attention, for window attention
// whose window covers the whole context, and for DSA whose window plus
// selected blocks cover every key of every query (dsa_window_blocks +
// dsa_top_blocks(T) >= the key blocks of T, ops/dsa_budget.h); otherwise
// "window(W=<blocks>, block=<tokens>)" or "dsa(W=..., top=..., block=...,
// ...)" with every DSA setting that still matters. Two configs with equal
// effective_attention and equal other settings train the same model.
std::string effective_attention(const ModelConfig& m);

// Why a run is equivalent to its representative, from the run's config:
// "the DSA budget covers the whole context of 128", "the window covers the
// whole context of 128", "dense attention ignores the model.dsa settings",
// "both select the same key blocks (...)", or "their resolved configs are the
// same".
std::string equivalence_reason(const Config& run, const Config& representative);

struct SweepEquivalence {
  // same_as[i]: 1-based index of the first run equivalent to run i+1, 0 when
  // run i+1 is the first of its kind.
  std::vector<int64_t> same_as;
  // One line per group of equivalent runs:
  // "runs 2 and 4 are equivalent to run 1: the DSA budget covers the whole context of 128".
  std::vector<std::string> notes;
};

// configs[i] belongs to run i+1; train.out is ignored (it differs per run).
SweepEquivalence find_equivalent_runs(const std::vector<Config>& configs);

}  // namespace sparta
