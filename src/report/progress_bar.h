#pragma once
// Layer report: what the CLI draws on a terminal (progress bar, number formats).
// A one-line progress display for long work (training, evaluation, data
// preparation):
//
//   train [#########.....................] 120/1000 12% | loss 3.21 | 41.2k tok/s | ETA 1m23s
//
// On a terminal the line is redrawn in place ('\r') at most 10 times a
// second. When the output is not a terminal (CI logs, `2> file`) a plain
// line is printed only when progress crosses another 10% or 15 s have passed
// since the last one, so logs stay short. The formatting helpers are free
// functions so they can be tested without a terminal.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

namespace sparta {

// "12s", "1m23s", "1h02m" (rounded to whole seconds; hours grow past 99h);
// "--" for a negative or non-finite value.
std::string format_duration(double seconds);

// Compact count: 950 -> "950", 41234 -> "41.2k", 3.5e6 -> "3.50M", 2e9 -> "2.00G".
std::string format_count(double value);

// The bar alone: `width` cells, '#' for the completed fraction (rounded
// down), '.' for the rest, in brackets: "[###.......]". done is clamped to
// [0, total]; total <= 0 draws a full bar.
std::string format_bar(int64_t done, int64_t total, int width);

// The whole line without '\r' or '\n':
//   "<label> <bar> <done>/<total> <pct>% | <extra> | <tail>"
// The "| <extra>" part is omitted when extra is empty. tail is e.g.
// "ETA 1m23s" (running) or "done in 5m02s" (finished).
std::string format_progress_line(const std::string& label, int64_t done, int64_t total,
                                 const std::string& extra, const std::string& tail, int width = 30);

// A throughput that does not jump with every step: exponential moving
// averages of the work done and of the time it took, rate = work / time.
// Averaging both (not the per-step rates) keeps one fast step from
// outweighing a slow one. The first sample is taken as is; each later one
// moves the averages by `weight` (0 < weight <= 1; 0.1 ~ the last 10 steps).
class SmoothedRate {
 public:
  explicit SmoothedRate(double weight = 0.1);
  // Adds one sample (e.g. tokens of a step and its seconds) and returns the
  // new rate. Samples with seconds <= 0 or non-finite values are ignored.
  double add(double amount, double seconds);
  // The current rate; 0 before any sample.
  double rate() const;

 private:
  double weight_;
  double amount_ = 0, seconds_ = 0;
  bool empty_ = true;
};

struct ProgressOptions {
  std::optional<bool> tty;         // default: isatty(fileno(out))
  int width = 30;                  // bar cells
  double min_redraw_s = 0.1;       // terminal: at most 10 redraws/s
  double plain_interval_s = 15.0;  // not a terminal: a line at least this often ...
  int plain_percent_step = 10;     // ... or whenever progress crosses this many %
  std::function<double()> clock;   // seconds, monotonic; default steady_clock (tests inject one)
};

class ProgressBar {
 public:
  // total: units of work (steps, batches); out: where to draw (not owned).
  ProgressBar(int64_t total, std::string label, std::FILE* out, ProgressOptions opts = {});
  ~ProgressBar();  // ends the terminal line if finish() was not called
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Records progress; draws if the rate limit allows. extra: caller's
  // status text, e.g. "loss 3.21 | 41.2k tok/s".
  void update(int64_t done, const std::string& extra = "");
  // Replaces the status text without progress, e.g. "validating…" while a
  // long evaluation runs, and redraws at once on a terminal (a plain log
  // gets no extra line). The next update() sets its own text again.
  void set_status(const std::string& extra);
  // Draws the final line ("done in ...") and ends it with '\n'. Idempotent.
  void finish();

  // Estimated seconds left from the average rate since the first update;
  // negative when unknown (no progress yet).
  double eta_seconds() const;

 private:
  void draw(bool final_line);
  double now() const;

  int64_t total_;
  std::string label_;
  std::FILE* out_;
  ProgressOptions opts_;
  bool tty_ = false;
  double start_t_ = 0;
  int64_t start_done_ = -1;  // first done value seen; the rate counts from there (resumed runs)
  double start_done_t_ = 0;
  int64_t done_ = 0;
  std::string extra_;
  double last_draw_t_ = -1e300;
  int last_bucket_ = -1;
  size_t last_len_ = 0;
  bool drawn_ = false;
  bool finished_ = false;
};

}  // namespace sparta
