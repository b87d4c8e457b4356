#pragma once
// What the commands print on stderr for the library's reports: notices and
// the training progress (banner, progress bar, eval lines). The library
// itself prints nothing; it hands these over as plain data.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "report/progress_bar.h"
#include "train/trainer.h"

namespace sparta::cli {

// Each line on stderr, as is.
void print_notices(const std::vector<std::string>& lines);

// Training reports on stderr. Skipped steps are always shown; `progress`
// adds the banner, the progress bar and the eval lines, `notices` the
// warnings about config, data and machine.
class ConsoleTrainReporter : public TrainReporter {
 public:
  ConsoleTrainReporter(bool progress, bool notices);
  void notice(const std::string& line) override;
  void started(const TrainStart& start) override;
  void step_skipped(int64_t step, const std::string& reason) override;
  void evaluating(int64_t step, double loss) override;
  void evaluated(const EvalReport& eval) override;
  void step_done(const StepReport& step) override;
  void finished() override;
  // Ends the bar of a run that stopped early (an error or Ctrl-C), so the
  // next line starts on a fresh terminal line.
  void abandon_bar();

 private:
  // A permanent line above the bar; on a terminal the bar's line is cleared first.
  void line_above_bar(const std::string& line) const;

  bool progress_, notices_;
  bool tty_;
  std::unique_ptr<ProgressBar> bar_;
  SmoothedRate rate_;  // the bar's tokens/s: a single step's rate jumps around
};

}  // namespace sparta::cli
