#include "cli/console.h"

#include <unistd.h>

#include <sstream>

#include "core/error.h"
#include "core/plural.h"

namespace sparta::cli {

namespace {

std::string fixed(double v, int prec) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(prec);
  os << v;
  return os.str();
}

}  // namespace

void print_notices(const std::vector<std::string>& lines) {
  for (const std::string& line : lines) std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

ConsoleTrainReporter::ConsoleTrainReporter(bool progress, bool notices)
    : progress_(progress), notices_(notices), tty_(isatty(fileno(stderr)) == 1) {}

void ConsoleTrainReporter::notice(const std::string& line) {
  if (notices_) print_notices({line});
}

void ConsoleTrainReporter::started(const TrainStart& s) {
  rate_ = SmoothedRate();
  bar_ = std::make_unique<ProgressBar>(s.total_steps, "train", stderr);
  if (!progress_) return;
  const std::string data = s.task.empty() ? cat(s.train_tokens, " train / ", s.val_tokens, " val tokens")
                                          : cat("task ", s.task, " (", s.task_tokens, " tokens/example)");
  std::fprintf(stderr, "sparta train: %lld parameters, %s tokenizer (vocab %lld), %s, %s%s\n",
               static_cast<long long>(s.parameters), s.tokenizer.c_str(), static_cast<long long>(s.vocab_size),
               data.c_str(),
               s.ranks > 1 ? cat(s.ranks, " processes × ", count_noun(s.threads, "thread"), ", gradients exchanged as ",
                                 s.compress, " in ", count_noun(s.buckets, "bucket"),
                                 s.overlapped ? " overlapped with backward" : "")
                                 .c_str()
                           : count_noun(s.threads, "thread").c_str(),
               s.resumed_from ? cat(", resuming from step ", *s.resumed_from).c_str() : "");
}

void ConsoleTrainReporter::line_above_bar(const std::string& line) const {
  std::fprintf(stderr, "%s%s\n", tty_ ? "\r\033[K" : "", line.c_str());
}

void ConsoleTrainReporter::step_skipped(int64_t step, const std::string& reason) {
  line_above_bar(cat("warning: step ", step, " skipped: ", reason, " (no update)"));
}

void ConsoleTrainReporter::evaluating(int64_t step, double loss) {
  if (progress_ && bar_) bar_->set_status(cat("loss ", fixed(loss, 4), " | validating…"));
}

void ConsoleTrainReporter::evaluated(const EvalReport& e) {
  if (!progress_) return;
  std::string line =
      cat("step ", e.step, "/", e.total_steps, " | loss ", fixed(e.loss, 4), " | val_loss ", fixed(e.val_loss, 4));
  if (e.val_accuracy) line += " | val_accuracy " + fixed(*e.val_accuracy, 3);
  line_above_bar(line);
}

void ConsoleTrainReporter::step_done(const StepReport& s) {
  rate_.add(static_cast<double>(s.tokens), s.seconds);
  if (progress_ && bar_)
    bar_->update(s.step, cat("loss ", fixed(s.last_loss, 4), " | ", fixed(rate_.rate() / 1000.0, 1), "k tok/s"));
}

void ConsoleTrainReporter::finished() {
  if (progress_ && bar_) bar_->finish();
  bar_.reset();
}

void ConsoleTrainReporter::abandon_bar() { bar_.reset(); }

}  // namespace sparta::cli
