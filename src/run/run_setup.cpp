#include "run/run_setup.h"

#include "core/error.h"

namespace sparta {

std::unique_ptr<Tokenizer> build_tokenizer(const Config& cfg, const TextCorpus& corpus) {
  const TokenizerConfig& k = cfg.tokenizer;
  if (k.kind == "byte") return make_byte_tokenizer();
  if (!k.vocab_file.empty()) {
    auto tok = load_wordpiece_vocab(k.vocab_file, k.lowercase);
    SPARTA_CHECK(tok->vocab_size() == k.vocab_size, "[tokenizer] ", k.vocab_file, " has ", tok->vocab_size(),
                 " tokens but tokenizer.vocab_size is ", k.vocab_size);
    return tok;
  }
  std::string all;
  for (const std::string& doc : corpus.documents) {
    all += doc;
    all += '\n';
  }
  auto tok = train_wordpiece(all, k.vocab_size, k.lowercase);
  SPARTA_CHECK(tok->vocab_size() == k.vocab_size, "[tokenizer] the corpus only supports a WordPiece vocabulary of ",
               tok->vocab_size(), " tokens, fewer than tokenizer.vocab_size = ", k.vocab_size,
               "; lower vocab_size or use more text");
  return tok;
}

TaskConfig task_config_from(const Config& cfg) {
  TaskConfig t;
  t.kind = cfg.data.task;
  t.length = cfg.model.context;
  t.passkey_digits = cfg.data.passkey_digits;
  t.mqar_pairs = cfg.data.mqar_pairs;
  t.mqar_queries = cfg.data.mqar_queries;
  return t;
}

}  // namespace sparta
