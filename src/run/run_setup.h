#pragma once
// What a config builds before any training: the tokenizer and the synthetic
// task it describes. `sparta tokenize`, eval and the trainer share these.
#include <memory>

#include "data/synthetic_tasks.h"
#include "data/text_corpus.h"
#include "data/tokenizer.h"
#include "run/config.h"

namespace sparta {

// Byte tokenizer, a WordPiece vocab file, or a WordPiece vocabulary trained on the corpus.
std::unique_ptr<Tokenizer> build_tokenizer(const Config& cfg, const TextCorpus& corpus);

// The synthetic task a config describes (data.task set), examples of
// model.context tokens.
TaskConfig task_config_from(const Config& cfg);

}  // namespace sparta
