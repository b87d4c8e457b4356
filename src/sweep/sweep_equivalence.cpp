#include "sweep/sweep_equivalence.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "ops/dsa_budget.h"

namespace sparta {
namespace {

// Key blocks of a context of T tokens.
int64_t key_blocks(const DsaConfig& d, int64_t T) { return (T + d.block - 1) / d.block; }

bool window_covers(const ModelConfig& m) { return dsa_window_blocks(m.dsa) >= key_blocks(m.dsa, m.context); }

// The config with its attention replaced by what it amounts to and train.out
// cleared: equal keys train the same model.
std::string run_key(const Config& c) {
  Config k = c;
  // clear(), not = "-": GCC 12 warns wrongly (-Wrestrict) about assigning a literal here.
  k.train.out.clear();
  k.model.attention.clear();
  k.model.dsa = DsaConfig{};
  return config_to_toml(k) + "\neffective_attention = " + effective_attention(c.model) + "\n";
}

std::string join_runs(const std::vector<int64_t>& runs) {
  std::string s = runs.size() == 1 ? "run " : "runs ";
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i) s += i + 1 == runs.size() ? " and " : ", ";
    s += std::to_string(runs[i]);
  }
  return s;
}

}  // namespace

std::string effective_attention(const ModelConfig& m) {
  const DsaConfig& d = m.dsa;
  if (m.attention == "dense" || (m.attention == "window" && window_covers(m)) ||
      (m.attention == "dsa" && dsa_attends_all(m.dsa, m.context)))
    return "dense";
  if (m.attention == "window") return cat("window(W=", dsa_window_blocks(d), ", block=", d.block, ")");
  return cat("dsa(W=", dsa_window_blocks(d), ", top=", dsa_top_blocks(d, m.context), ", block=", d.block,
             ", group=", d.group, ", group_keep=", d.group_keep, ", rank=", d.rank, ", summary=", d.summary,
             ", scorer_loss=", d.scorer_loss, ", explore=", d.explore, ")");
}

std::string equivalence_reason(const Config& run, const Config& rep) {
  const ModelConfig& m = run.model;
  auto without_out = [](Config c) {
    c.train.out.clear();
    return config_to_toml(c);
  };
  if (without_out(run) == without_out(rep)) return "their resolved configs are the same";
  const std::string eff = effective_attention(m);
  if (eff != "dense") return cat("both select the same key blocks (", eff, " at context ", m.context, ")");
  // The sparse one of the pair is the one whose budget reaches everything.
  const std::string& sparse = m.attention != "dense" ? m.attention : rep.model.attention;
  if (sparse == "dsa") return cat("the DSA budget covers the whole context of ", m.context);
  if (sparse == "window") return cat("the window covers the whole context of ", m.context);
  return "dense attention ignores the model.dsa settings";
}

SweepEquivalence find_equivalent_runs(const std::vector<Config>& configs) {
  SweepEquivalence e;
  e.same_as.assign(configs.size(), 0);
  std::map<std::string, int64_t> first;                 // run key -> 1-based index of its first run
  std::map<int64_t, std::vector<int64_t>> followers;    // representative -> its equivalent runs
  for (size_t i = 0; i < configs.size(); ++i) {
    const int64_t index = static_cast<int64_t>(i) + 1;
    auto [it, inserted] = first.emplace(run_key(configs[i]), index);
    if (inserted) continue;
    e.same_as[i] = it->second;
    followers[it->second].push_back(index);
  }
  for (const auto& [rep, runs] : followers) {
    std::vector<std::string> reasons;
    for (int64_t r : runs) {
      const std::string why = equivalence_reason(configs[static_cast<size_t>(r - 1)], configs[static_cast<size_t>(rep - 1)]);
      if (std::find(reasons.begin(), reasons.end(), why) == reasons.end()) reasons.push_back(why);
    }
    std::string note = join_runs(runs) + (runs.size() == 1 ? " is" : " are") + " equivalent to run " +
                       std::to_string(rep) + ": ";
    for (size_t i = 0; i < reasons.size(); ++i) note += (i ? "; " : "") + reasons[i];
    e.notes.push_back(std::move(note));
  }
  return e;
}

}  // namespace sparta
