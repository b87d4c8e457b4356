#include "run/config.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>
#include <toml++/toml.h>

#include "core/error.h"
#include "data/utf8.h"
#include "io/atomic_file.h"
#include "ops/attention_registry.h"
#include "nn/precision.h"
#include "run/toml_guard.h"

namespace sparta {
namespace {

// One descriptor per key: how to set it from a TOML node or a --set string,
// and how to print it back. A single table keeps parse, override and
// serialisation in agreement.
enum class Kind { Int, Float, Bool, String, StringList };

struct Key {
  std::string section, name;
  Kind kind;
  std::function<void(Config&, const toml::node&)> set_node;
  std::function<void(Config&, const std::string&)> set_text;
  std::function<std::string(const Config&)> print;
  std::function<nlohmann::ordered_json(const Config&)> to_json;
};

// A TOML basic string. Not toml++'s formatter: 3.3.0 writes a string
// holding a newline, quotes and ''' as a multi-line literal string that
// ends early, so config.toml would not parse back.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {  // other control characters: TOML wants them escaped
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += ch;  // UTF-8 passes through: strings are checked to be UTF-8
        }
    }
  }
  out += '"';
  return out;
}

// The shortest text that reads back as the same double (0.8, not
// 0.80000000000000004), always a TOML float ("2.0", not "2").
std::string fmt_double(double v) {
  char buf[64];
  std::string s;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7ff0000000000000ULL) == 0 && (bits & 0x000fffffffffffffULL) != 0) {
    // A subnormal. Training threads run with denormals-are-zero (core/parallel.cpp),
    // under which to_chars' zero test sees 0; printf works on the bits.
    s.assign(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.17g", v)));
  } else {
    s.assign(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
  }
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// A --set number: decimal or scientific notation, "inf"/"nan", an optional
// sign. Subnormals such as 1e-320 are numbers like any other (std::stod
// would throw for them); a value beyond the double range is an error of its
// own, not "not a number".
double parse_number(const std::string& s, const std::string& where) {
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (first != last && *first == '+' && last - first > 1 && first[1] != '-' && first[1] != '+') ++first;
  double v = 0;
  const auto [end, ec] = std::from_chars(first, last, v);
  SPARTA_CHECK(ec != std::errc::invalid_argument && end == last && !s.empty(), "[config] ", where,
               " must be a number, got '", s, "'");
  SPARTA_CHECK(ec != std::errc::result_out_of_range, "[config] ", where,
               " is out of range: a number must be 0 or between about 4.9e-324 and 1.8e308 in magnitude, got '", s,
               "'");
  return v;
}

// `field` is a generic lambda returning a reference to the value inside a
// Config (const or not): [](auto& c) -> auto& { return c.model.n_layer; }.
template <typename Field>
Key make_key(std::string section, std::string name, Field field) {
  Key k;
  k.section = section;
  k.name = name;
  using V = std::remove_cvref_t<decltype(field(std::declval<Config&>()))>;
  std::string where = section + "." + name;
  if constexpr (std::is_same_v<V, int64_t>) {
    k.kind = Kind::Int;
    k.set_node = [=](Config& c, const toml::node& n) {
      auto v = n.value_exact<int64_t>();
      SPARTA_CHECK(v.has_value(), "[config] ", where, " must be an integer");
      field(c) = *v;
    };
    k.set_text = [=](Config& c, const std::string& s) {
      size_t pos = 0;
      int64_t v = 0;
      try {
        v = std::stoll(s, &pos);
      } catch (...) {
        pos = 0;
      }
      SPARTA_CHECK(pos == s.size() && !s.empty(), "[config] ", where, " must be an integer, got '", s, "'");
      field(c) = v;
    };
    k.print = [=](const Config& c) { return std::to_string(field(c)); };
    k.to_json = [=](const Config& c) { return nlohmann::ordered_json(field(c)); };
  } else if constexpr (std::is_same_v<V, double>) {
    k.kind = Kind::Float;
    k.set_node = [=](Config& c, const toml::node& n) {
      auto v = n.value<double>();  // accepts integers too: lr = 1 is fine
      SPARTA_CHECK(v.has_value(), "[config] ", where, " must be a number");
      field(c) = *v;
    };
    k.set_text = [=](Config& c, const std::string& s) { field(c) = parse_number(s, where); };
    k.print = [=](const Config& c) { return fmt_double(field(c)); };
    k.to_json = [=](const Config& c) { return nlohmann::ordered_json(field(c)); };
  } else if constexpr (std::is_same_v<V, bool>) {
    k.kind = Kind::Bool;
    k.set_node = [=](Config& c, const toml::node& n) {
      auto v = n.value_exact<bool>();
      SPARTA_CHECK(v.has_value(), "[config] ", where, " must be true or false");
      field(c) = *v;
    };
    k.set_text = [=](Config& c, const std::string& s) {
      SPARTA_CHECK(s == "true" || s == "false", "[config] ", where, " must be true or false, got '", s, "'");
      field(c) = (s == "true");
    };
    k.print = [=](const Config& c) { return std::string(field(c) ? "true" : "false"); };
    k.to_json = [=](const Config& c) { return nlohmann::ordered_json(field(c)); };
  } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
    k.kind = Kind::StringList;
    k.set_node = [=](Config& c, const toml::node& n) {
      const toml::array* arr = n.as_array();
      SPARTA_CHECK(arr, "[config] ", where, " must be an array of strings, e.g. [\"head\"]");
      std::vector<std::string> v;
      for (const toml::node& e : *arr) {
        auto s = e.value_exact<std::string>();
        SPARTA_CHECK(s.has_value(), "[config] ", where, " must be an array of strings, e.g. [\"head\"]");
        v.push_back(*s);
      }
      field(c) = v;
    };
    // --set accepts a TOML array (["head", "h.0.*"]) or a comma-separated
    // list (head,h.0.*); "" or [] is the empty list.
    k.set_text = [=](Config& c, const std::string& s) {
      std::vector<std::string> v;
      if (!s.empty() && s.front() == '[') {
        toml::table t;
        try {
          t = toml::parse("v = " + s);
        } catch (const toml::parse_error& e) {
          throw Error(cat("[config] ", where, " must be an array of strings, got '", s, "': ", e.description()));
        }
        const toml::array* arr = t["v"].as_array();
        SPARTA_CHECK(arr, "[config] ", where, " must be an array of strings, got '", s, "'");
        for (const toml::node& e : *arr) {
          auto str = e.value_exact<std::string>();
          SPARTA_CHECK(str.has_value(), "[config] ", where, " must be an array of strings, got '", s, "'");
          v.push_back(*str);
        }
      } else {
        for (size_t start = 0; start < s.size();) {
          const size_t comma = s.find(',', start);
          const size_t end = comma == std::string::npos ? s.size() : comma;
          v.push_back(s.substr(start, end - start));
          start = end + 1;
        }
      }
      for (const std::string& e : v) {
        SPARTA_CHECK(utf8_first_invalid(e) == e.size(), "[config] ", where, " must be UTF-8 text");
        SPARTA_CHECK(!e.empty(), "[config] ", where, " has an empty entry in '", s, "'");
      }
      field(c) = v;
    };
    k.print = [=](const Config& c) {
      std::string out = "[";
      for (const std::string& e : field(c)) out += (out.size() > 1 ? ", " : "") + quote(e);
      return out + "]";
    };
    k.to_json = [=](const Config& c) { return nlohmann::ordered_json(field(c)); };
  } else {
    k.kind = Kind::String;
    k.set_node = [=](Config& c, const toml::node& n) {
      auto v = n.value_exact<std::string>();
      SPARTA_CHECK(v.has_value(), "[config] ", where, " must be a string");
      field(c) = *v;
    };
    k.set_text = [=](Config& c, const std::string& s) {
      std::string v = s;
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      // config.toml saves the value as a TOML string, which can only hold
      // UTF-8: anything else would come back as different text.
      const size_t bad = utf8_first_invalid(v);
      SPARTA_CHECK(bad == v.size(), "[config] ", where, " must be UTF-8 text, got an invalid byte 0x", std::hex,
                   static_cast<unsigned>(static_cast<unsigned char>(v[bad < v.size() ? bad : 0])), " at offset ",
                   std::dec, bad);
      field(c) = v;
    };
    k.print = [=](const Config& c) { return quote(field(c)); };
    k.to_json = [=](const Config& c) { return nlohmann::ordered_json(field(c)); };
  }
  return k;
}

const std::vector<Key>& keys() {
  static const std::vector<Key> table = [] {
    std::vector<Key> t;
    t.push_back(make_key("model", "n_layer", [](auto& c) -> auto& { return c.model.n_layer; }));
    t.push_back(make_key("model", "n_head", [](auto& c) -> auto& { return c.model.n_head; }));
    t.push_back(make_key("model", "d_model", [](auto& c) -> auto& { return c.model.d_model; }));
    t.push_back(make_key("model", "context", [](auto& c) -> auto& { return c.model.context; }));
    t.push_back(make_key("model", "attention", [](auto& c) -> auto& { return c.model.attention; }));
    t.push_back(make_key("model", "rope_base", [](auto& c) -> auto& { return c.model.rope_base; }));
    t.push_back(make_key("model", "rope_dims", [](auto& c) -> auto& { return c.model.rope_dims; }));
    t.push_back(make_key("model.dsa", "block", [](auto& c) -> auto& { return c.model.dsa.block; }));
    t.push_back(make_key("model.dsa", "summary", [](auto& c) -> auto& { return c.model.dsa.summary; }));
    t.push_back(make_key("model.dsa", "scorer_loss", [](auto& c) -> auto& { return c.model.dsa.scorer_loss; }));
    t.push_back(make_key("model.dsa", "explore", [](auto& c) -> auto& { return c.model.dsa.explore; }));
    t.push_back(make_key("model.dsa", "window", [](auto& c) -> auto& { return c.model.dsa.window; }));
    t.push_back(make_key("model.dsa", "top_k", [](auto& c) -> auto& { return c.model.dsa.top_k; }));
    t.push_back(make_key("model.dsa", "keep_short", [](auto& c) -> auto& { return c.model.dsa.keep_short; }));
    t.push_back(make_key("model.dsa", "keep_long", [](auto& c) -> auto& { return c.model.dsa.keep_long; }));
    t.push_back(make_key("model.dsa", "short_len", [](auto& c) -> auto& { return c.model.dsa.short_len; }));
    t.push_back(make_key("model.dsa", "long_len", [](auto& c) -> auto& { return c.model.dsa.long_len; }));
    t.push_back(make_key("model.dsa", "dense_len", [](auto& c) -> auto& { return c.model.dsa.dense_len; }));
    t.push_back(make_key("model.dsa", "group", [](auto& c) -> auto& { return c.model.dsa.group; }));
    t.push_back(make_key("model.dsa", "group_keep", [](auto& c) -> auto& { return c.model.dsa.group_keep; }));
    t.push_back(make_key("model.dsa", "rank", [](auto& c) -> auto& { return c.model.dsa.rank; }));

    t.push_back(make_key("tokenizer", "kind", [](auto& c) -> auto& { return c.tokenizer.kind; }));
    t.push_back(make_key("tokenizer", "vocab_size", [](auto& c) -> auto& { return c.tokenizer.vocab_size; }));
    t.push_back(make_key("tokenizer", "lowercase", [](auto& c) -> auto& { return c.tokenizer.lowercase; }));
    t.push_back(make_key("tokenizer", "vocab_file", [](auto& c) -> auto& { return c.tokenizer.vocab_file; }));
    t.push_back(make_key("data", "train", [](auto& c) -> auto& { return c.data.train; }));
    t.push_back(make_key("data", "val_fraction", [](auto& c) -> auto& { return c.data.val_fraction; }));
    t.push_back(make_key("data", "task", [](auto& c) -> auto& { return c.data.task; }));
    t.push_back(make_key("data", "passkey_digits", [](auto& c) -> auto& { return c.data.passkey_digits; }));
    t.push_back(make_key("data", "mqar_pairs", [](auto& c) -> auto& { return c.data.mqar_pairs; }));
    t.push_back(make_key("data", "mqar_queries", [](auto& c) -> auto& { return c.data.mqar_queries; }));
    t.push_back(make_key("data", "task_eval_examples", [](auto& c) -> auto& { return c.data.task_eval_examples; }));
    t.push_back(make_key("train", "batch_size", [](auto& c) -> auto& { return c.train.batch_size; }));
    t.push_back(make_key("train", "grad_accum", [](auto& c) -> auto& { return c.train.grad_accum; }));
    t.push_back(make_key("train", "steps", [](auto& c) -> auto& { return c.train.steps; }));
    t.push_back(make_key("train", "lr", [](auto& c) -> auto& { return c.train.lr; }));
    t.push_back(make_key("train", "warmup", [](auto& c) -> auto& { return c.train.warmup; }));
    t.push_back(make_key("train", "weight_decay", [](auto& c) -> auto& { return c.train.weight_decay; }));
    t.push_back(make_key("train", "grad_clip", [](auto& c) -> auto& { return c.train.grad_clip; }));
    t.push_back(make_key("train", "seed", [](auto& c) -> auto& { return c.train.seed; }));
    t.push_back(make_key("train", "eval_every", [](auto& c) -> auto& { return c.train.eval_every; }));
    t.push_back(make_key("train", "ckpt_every", [](auto& c) -> auto& { return c.train.ckpt_every; }));
    t.push_back(make_key("train", "threads", [](auto& c) -> auto& { return c.train.threads; }));
    t.push_back(make_key("train", "out", [](auto& c) -> auto& { return c.train.out; }));
    t.push_back(make_key("train", "beta1", [](auto& c) -> auto& { return c.train.beta1; }));
    t.push_back(make_key("train", "beta2", [](auto& c) -> auto& { return c.train.beta2; }));
    t.push_back(make_key("train", "eps", [](auto& c) -> auto& { return c.train.eps; }));
    t.push_back(make_key("train", "min_lr_ratio", [](auto& c) -> auto& { return c.train.min_lr_ratio; }));
    t.push_back(make_key("train", "keep_checkpoints", [](auto& c) -> auto& { return c.train.keep_checkpoints; }));
    t.push_back(make_key("train", "eval_batches", [](auto& c) -> auto& { return c.train.eval_batches; }));
    t.push_back(make_key("train", "init_from", [](auto& c) -> auto& { return c.train.init_from; }));
    t.push_back(make_key("train", "max_bad_steps", [](auto& c) -> auto& { return c.train.max_bad_steps; }));
    t.push_back(make_key("train", "precision", [](auto& c) -> auto& { return c.train.precision; }));
    t.push_back(make_key("precision", "fp32", [](auto& c) -> auto& { return c.precision.fp32; }));
    t.push_back(make_key("precision", "loss_scaling", [](auto& c) -> auto& { return c.precision.loss_scaling; }));
    t.push_back(make_key("precision", "init_scale", [](auto& c) -> auto& { return c.precision.init_scale; }));
    t.push_back(make_key("precision", "growth_factor", [](auto& c) -> auto& { return c.precision.growth_factor; }));
    t.push_back(make_key("precision", "backoff_factor", [](auto& c) -> auto& { return c.precision.backoff_factor; }));
    t.push_back(make_key("precision", "growth_interval", [](auto& c) -> auto& { return c.precision.growth_interval; }));
    t.push_back(make_key("dist", "compress", [](auto& c) -> auto& { return c.dist.compress; }));
    t.push_back(make_key("dist", "q4_block", [](auto& c) -> auto& { return c.dist.q4_block; }));
    t.push_back(make_key("dist", "error_feedback", [](auto& c) -> auto& { return c.dist.error_feedback; }));
    t.push_back(make_key("dist", "full_precision_every", [](auto& c) -> auto& { return c.dist.full_precision_every; }));
    t.push_back(make_key("dist", "compress_after", [](auto& c) -> auto& { return c.dist.compress_after; }));
    t.push_back(make_key("dist", "timeout_s", [](auto& c) -> auto& { return c.dist.timeout_s; }));
    t.push_back(make_key("dist", "bucket_mb", [](auto& c) -> auto& { return c.dist.bucket_mb; }));
    return t;
  }();
  return table;
}

// "model, model.dsa, tokenizer, data, train, precision": the sections in table order.
std::string known_sections() {
  std::string s, last;
  for (const Key& k : keys())
    if (k.section != last) {
      s += (s.empty() ? "" : ", ") + k.section;
      last = k.section;
    }
  return s;
}

std::string known_in(const std::string& section) {
  std::string s;
  for (const Key& k : keys())
    if (k.section == section) s += (s.empty() ? "" : ", ") + k.name;
  return s;
}

bool is_section(const std::string& s) {
  for (const Key& k : keys())
    if (k.section == s) return true;
  return false;
}

const Key* find_key(const std::string& section, const std::string& name) {
  for (const Key& k : keys())
    if (k.section == section && k.name == name) return &k;
  return nullptr;
}

const Key& require_key(const std::string& section, const std::string& name) {
  SPARTA_CHECK(is_section(section), "[config] unknown section [", section,
               "] (known: ", known_sections(), ")");
  const Key* k = find_key(section, name);
  SPARTA_CHECK(k, "[config] unknown key '", section, ".", name, "' (known keys in [", section,
               "]: ", known_in(section), ")");
  return *k;
}

// Reads one table; a nested table that is itself a known section (e.g. the
// `dsa` table inside [model], written [model.dsa]) is read recursively.
void parse_table(Config& cfg, const toml::table& tbl, const std::string& section, const std::string& source) {
  for (auto&& [key_name, node] : tbl) {
    std::string key(key_name.str());
    if (node.is_table() && is_section(section + "." + key)) {
      parse_table(cfg, *node.as_table(), section + "." + key, source);
      continue;
    }
    const Key& k = require_key(section, key);
    try {
      k.set_node(cfg, node);
    } catch (const Error& e) {
      throw Error(cat(e.what(), " (in ", source, ")"));
    }
  }
}

}  // namespace

void apply_overrides(Config& cfg, const std::vector<std::string>& overrides) {
  for (const std::string& o : overrides) {
    size_t eq = o.find('=');
    SPARTA_CHECK(eq != std::string::npos, "[config] override '", o, "' must look like section.key=value");
    std::string path = o.substr(0, eq), value = o.substr(eq + 1);
    size_t dot = path.rfind('.');
    SPARTA_CHECK(dot != std::string::npos && dot > 0 && dot + 1 < path.size(), "[config] override '", o,
                 "' must look like section.key=value");
    require_key(path.substr(0, dot), path.substr(dot + 1)).set_text(cfg, value);
  }
  validate_config(cfg);
}

Config parse_config(std::string_view toml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(guard_toml_text(toml_text, source), source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw Error(cat("[config] ", source, ":", b.line, ":", b.column, ": ", e.description()));
  }
  Config cfg;
  for (auto&& [sec_name, sec_node] : root) {
    std::string section(sec_name.str());
    SPARTA_CHECK(is_section(section), "[config] ", source, ": unknown section [", section,
                 "] (known: ", known_sections(), ")");
    const toml::table* tbl = sec_node.as_table();
    SPARTA_CHECK(tbl, "[config] ", source, ": '", section, "' must be a table ([", section, "])");
    parse_table(cfg, *tbl, section, source);
  }
  apply_overrides(cfg, overrides);
  return cfg;
}

std::string read_config_text(const std::filesystem::path& file) {
  std::error_code ec;
  const auto st = std::filesystem::status(file, ec);
  SPARTA_CHECK(std::filesystem::exists(st), "[config] config file '", file.string(), "' does not exist");
  SPARTA_CHECK(!std::filesystem::is_directory(st), "[config] '", file.string(),
               "' is a folder, not a config file (give a .toml file, e.g. configs/tiny.toml)");
  SPARTA_CHECK(std::filesystem::is_regular_file(st), "[config] config file '", file.string(),
               "' is not a regular file");
  return read_file(file);
}

Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  return parse_config(read_config_text(file), file.string(), overrides);
}

// Upper limits of keys that size allocations or loops, so a typo cannot ask
// for unbounded memory (see also train_memory.h) or a run that never ends.
constexpr int64_t kMaxTokensPerStep = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxSteps = 1'000'000'000;
constexpr int64_t kMaxTaskEvalExamples = 1 << 20;

void validate_config(const Config& c) {
  const ModelConfig& m = c.model;
  SPARTA_CHECK(m.n_layer >= 1 && m.n_layer <= 1024, "[config] model.n_layer must be in [1, 1024], got ", m.n_layer);
  SPARTA_CHECK(m.n_head >= 1, "[config] model.n_head must be >= 1, got ", m.n_head);
  SPARTA_CHECK(m.d_model >= 1 && m.d_model <= 65536, "[config] model.d_model must be in [1, 65536], got ",
               m.d_model);
  SPARTA_CHECK(m.d_model % m.n_head == 0, "[config] model.n_head (", m.n_head, ") must divide model.d_model (",
               m.d_model, ")");
  SPARTA_CHECK((m.d_model / m.n_head) % 2 == 0, "[config] head dimension d_model/n_head = ", m.d_model / m.n_head,
               " must be even (RoPE rotates pairs)");
  SPARTA_CHECK(m.context >= 2 && m.context <= (1 << 20), "[config] model.context must be in [2, 1048576], got ",
               m.context);
  SPARTA_CHECK(find_attention(m.attention), "[config] model.attention '", m.attention,
               "' is not available (available: ", attention_names_text(), ")");
  check_dsa_config(m.dsa);
  SPARTA_CHECK(m.rope_base > 1.0 && std::isfinite(m.rope_base), "[config] model.rope_base must be > 1, got ",
               m.rope_base);
  SPARTA_CHECK(m.rope_dims == 0 || (m.rope_dims >= 2 && m.rope_dims % 2 == 0 && m.rope_dims <= m.d_model / m.n_head),
               "[config] model.rope_dims must be 0 (whole head) or even in [2, head dimension ", m.d_model / m.n_head,
               "], got ", m.rope_dims);
  const TokenizerConfig& k = c.tokenizer;
  SPARTA_CHECK(k.kind == "byte" || k.kind == "wordpiece", "[config] tokenizer.kind must be \"byte\" or \"wordpiece\", got '",
               k.kind, "'");
  if (k.kind == "byte")
    SPARTA_CHECK(k.vocab_size == 257, "[config] tokenizer.vocab_size must be 257 for the byte tokenizer (256 bytes + <|endoftext|>), got ",
                 k.vocab_size);
  else
    SPARTA_CHECK(k.vocab_size >= 16 && k.vocab_size <= 1000000,
                 "[config] tokenizer.vocab_size must be in [16, 1000000], got ", k.vocab_size);
  SPARTA_CHECK(c.data.val_fraction >= 0.0 && c.data.val_fraction <= 0.5,
               "[config] data.val_fraction must be in [0, 0.5], got ", c.data.val_fraction);
  SPARTA_CHECK(c.data.task.empty() || c.data.task == "passkey" || c.data.task == "mqar",
               "[config] data.task must be \"\" (text), \"passkey\" or \"mqar\", got '", c.data.task, "'");
  SPARTA_CHECK(c.data.task_eval_examples >= 1 && c.data.task_eval_examples <= kMaxTaskEvalExamples,
               "[config] data.task_eval_examples must be >= 1 and at most ", kMaxTaskEvalExamples, ", got ",
               c.data.task_eval_examples);
  const TrainConfig& t = c.train;
  // Token buffers are indexed with 32-bit ints; far below this the memory
  // check (train_memory.h) stops a run anyway.
  SPARTA_CHECK(t.batch_size >= 1 && t.batch_size <= kMaxTokensPerStep / m.context,
               "[config] train.batch_size must be >= 1 and at most ", kMaxTokensPerStep / m.context,
               " (train.batch_size * model.context at most ", kMaxTokensPerStep, " tokens per step), got ",
               t.batch_size);
  SPARTA_CHECK(t.grad_accum >= 1 && t.grad_accum <= kMaxTokensPerStep / (m.context * t.batch_size),
               "[config] train.grad_accum must be >= 1 and at most ", kMaxTokensPerStep / (m.context * t.batch_size),
               " (train.grad_accum * train.batch_size * model.context at most ", kMaxTokensPerStep,
               " tokens per step), got ", t.grad_accum);
  SPARTA_CHECK(t.steps >= 1 && t.steps <= kMaxSteps, "[config] train.steps must be >= 1 and at most ", kMaxSteps,
               ", got ", t.steps);
  SPARTA_CHECK(t.lr > 0.0 && std::isfinite(t.lr), "[config] train.lr must be > 0, got ", t.lr);
  SPARTA_CHECK(t.warmup >= 0, "[config] train.warmup must be >= 0, got ", t.warmup);
  SPARTA_CHECK(t.weight_decay >= 0.0 && std::isfinite(t.weight_decay), "[config] train.weight_decay must be >= 0, got ",
               t.weight_decay);
  SPARTA_CHECK(std::isfinite(t.grad_clip), "[config] train.grad_clip must be finite, got ", t.grad_clip);
  SPARTA_CHECK(t.seed >= 0, "[config] train.seed must be >= 0, got ", t.seed);
  SPARTA_CHECK(t.eval_every >= 0, "[config] train.eval_every must be >= 0, got ", t.eval_every);
  SPARTA_CHECK(t.ckpt_every >= 0, "[config] train.ckpt_every must be >= 0, got ", t.ckpt_every);
  SPARTA_CHECK(t.threads >= 0 && t.threads <= 1024, "[config] train.threads must be in [0, 1024], got ", t.threads);
  SPARTA_CHECK(!t.out.empty(), "[config] train.out must not be empty");
  SPARTA_CHECK(t.beta1 >= 0.0 && t.beta1 < 1.0, "[config] train.beta1 must be in [0, 1), got ", t.beta1);
  SPARTA_CHECK(t.beta2 >= 0.0 && t.beta2 < 1.0, "[config] train.beta2 must be in [0, 1), got ", t.beta2);
  SPARTA_CHECK(t.eps > 0.0, "[config] train.eps must be > 0, got ", t.eps);
  SPARTA_CHECK(t.min_lr_ratio >= 0.0 && t.min_lr_ratio <= 1.0, "[config] train.min_lr_ratio must be in [0, 1], got ",
               t.min_lr_ratio);
  SPARTA_CHECK(t.keep_checkpoints >= 1, "[config] train.keep_checkpoints must be >= 1, got ", t.keep_checkpoints);
  SPARTA_CHECK(t.eval_batches >= 0, "[config] train.eval_batches must be >= 0, got ", t.eval_batches);
  SPARTA_CHECK(t.max_bad_steps >= 1, "[config] train.max_bad_steps must be >= 1, got ", t.max_bad_steps);
  try {
    parse_precision(t.precision);
  } catch (const Error& e) {
    throw Error(cat("[config] train.precision: ", e.what()));
  }
  try {
    check_fp32_modules(c.precision.fp32, m.n_layer);
  } catch (const Error& e) {
    throw Error(cat("[config] ", e.what()));
  }
  const PrecisionConfig& p = c.precision;
  SPARTA_CHECK(p.init_scale >= 1.0 && p.init_scale <= 1e30, "[config] precision.init_scale must be in [1, 1e30], got ",
               p.init_scale);
  SPARTA_CHECK(p.growth_factor >= 1.0 && p.growth_factor <= 1e6, "[config] precision.growth_factor must be in [1, 1e6], got ",
               p.growth_factor);
  SPARTA_CHECK(p.backoff_factor > 0.0 && p.backoff_factor < 1.0,
               "[config] precision.backoff_factor must be in (0, 1), got ", p.backoff_factor);
  SPARTA_CHECK(p.growth_interval >= 1, "[config] precision.growth_interval must be >= 1, got ", p.growth_interval);
  const DistConfig& d = c.dist;
  SPARTA_CHECK(d.compress == "none" || d.compress == "bf16" || d.compress == "q4",
               "[config] dist.compress must be \"none\", \"bf16\" or \"q4\", got \"", d.compress, "\"");
  SPARTA_CHECK(d.q4_block >= 8 && d.q4_block <= 65536 && d.q4_block % 2 == 0,
               "[config] dist.q4_block must be an even number in [8, 65536], got ", d.q4_block);
  SPARTA_CHECK(d.full_precision_every >= 0, "[config] dist.full_precision_every must be >= 0 (0 = never), got ",
               d.full_precision_every);
  SPARTA_CHECK(d.compress_after >= 0, "[config] dist.compress_after must be >= 0, got ", d.compress_after);
  SPARTA_CHECK(d.timeout_s >= 1.0 && d.timeout_s <= 86400.0, "[config] dist.timeout_s must be in [1, 86400], got ",
               d.timeout_s);
  SPARTA_CHECK(d.bucket_mb >= 0.0 && d.bucket_mb <= 65536.0,
               "[config] dist.bucket_mb must be in [0, 65536] (0 = one bucket), got ", d.bucket_mb);
}

std::vector<std::string> config_warnings(const Config& c) {
  std::vector<std::string> w;
  if (c.train.warmup > c.train.steps)
    w.push_back(cat("train.warmup (", c.train.warmup, ") is longer than train.steps (", c.train.steps,
                    "): the learning rate never reaches train.lr"));
  return w;
}

std::string config_to_toml(const Config& cfg) {
  std::ostringstream os;
  std::string section;
  for (const Key& k : keys()) {
    if (k.section != section) {
      os << (section.empty() ? "" : "\n") << "[" << k.section << "]\n";
      section = k.section;
    }
    os << k.name << " = " << k.print(cfg) << "\n";
  }
  return os.str();
}

nlohmann::ordered_json config_to_json(const Config& cfg) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const Key& k : keys()) {
    // "model.dsa" -> j["model"]["dsa"]: the same nesting as the TOML tables.
    nlohmann::ordered_json* section = &j;
    for (size_t start = 0;;) {
      const size_t dot = k.section.find('.', start);
      section = &(*section)[k.section.substr(start, dot == std::string::npos ? std::string::npos : dot - start)];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    (*section)[k.name] = k.to_json(cfg);
  }
  return j;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> out;
  for (const Key& k : keys()) out.push_back(k.section + "." + k.name);
  return out;
}

std::string config_value(const Config& cfg, const std::string& key) {
  const size_t dot = key.rfind('.');
  SPARTA_CHECK(dot != std::string::npos && dot > 0, "[config] '", key, "' is not a section.key name");
  const Key& k = require_key(key.substr(0, dot), key.substr(dot + 1));
  if (k.kind != Kind::Float) return k.print(cfg);
  // Shortest text that reads back as the same double: 0.003, not 0.0030000000000000001.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, std::stod(k.print(cfg)));
  return std::string(buf, r.ptr);
}

std::string config_difference(const Config& a, const Config& b, const std::vector<std::string>& keys,
                              const std::string& a_name, const std::string& b_name) {
  for (const std::string& key : keys) {
    const std::string va = config_value(a, key), vb = config_value(b, key);
    if (va != vb) return cat(key, " is ", va, " in ", a_name, " but ", vb, " in ", b_name);
  }
  return "";
}

const std::vector<std::string>& weight_shape_keys() {
  static const std::vector<std::string> keys = {"model.n_layer", "model.n_head", "model.d_model", "tokenizer.kind",
                                                "tokenizer.vocab_size"};
  return keys;
}

void copy_weightless_model_settings(const Config& from, Config& to) {
  to.model.context = from.model.context;
  to.model.rope_base = from.model.rope_base;
  to.model.rope_dims = from.model.rope_dims;
  to.model.attention = from.model.attention;
  to.model.dsa = from.model.dsa;
  to.train.precision = from.train.precision;
  to.precision.fp32 = from.precision.fp32;
}

const std::vector<std::string>& resume_safe_keys() {
  static const std::vector<std::string> safe = {
      "train.steps",          "train.eval_every",        "train.ckpt_every",     "train.threads",
      "train.eval_batches",   "train.keep_checkpoints",  "train.max_bad_steps",  "train.out",
      "data.task_eval_examples", "model.dsa.window",     "model.dsa.top_k",      "model.dsa.keep_short",
      "model.dsa.keep_long",  "model.dsa.short_len",     "model.dsa.long_len",   "model.dsa.group_keep",
      "model.dsa.dense_len",  "dist.timeout_s",          "dist.bucket_mb"};
  return safe;
}

}  // namespace sparta
