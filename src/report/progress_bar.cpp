#include "report/progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace sparta {
namespace {

std::string printf_str(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a);
  return buf;
}

// Columns of the terminal behind `out`, 0 if unknown.
int terminal_columns(std::FILE* out) {
  struct winsize ws {};
  if (::ioctl(fileno(out), TIOCGWINSZ, &ws) == 0) return ws.ws_col;
  return 0;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const long long s = std::llround(seconds);
  char buf[48];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  return buf;
}

std::string format_count(double v) {
  if (!std::isfinite(v)) return printf_str("%g", v);
  const double a = std::fabs(v);
  // Thresholds sit where rounding would otherwise print "1000.0k".
  if (a < 999.5) return v == std::floor(v) ? printf_str("%.0f", v) : printf_str("%.3g", v);
  if (a < 999.95e3) return printf_str("%.1fk", v / 1e3);
  if (a < 999.995e6) return printf_str("%.2fM", v / 1e6);
  if (a < 999.995e9) return printf_str("%.2fG", v / 1e9);
  return printf_str("%.2fT", v / 1e12);
}

std::string format_bar(int64_t done, int64_t total, int width) {
  width = std::max(width, 1);
  int filled = width;
  if (total > 0) {
    const int64_t d = std::clamp<int64_t>(done, 0, total);
    filled = static_cast<int>(static_cast<double>(d) / static_cast<double>(total) * width);
    if (d < total) filled = std::min(filled, width - 1);  // a full bar means finished
  }
  std::string s;
  s.reserve(static_cast<size_t>(width) + 2);
  s.push_back('[');
  s.append(static_cast<size_t>(filled), '#').append(static_cast<size_t>(width - filled), '.').push_back(']');
  return s;
}

std::string format_progress_line(const std::string& label, int64_t done, int64_t total,
                                 const std::string& extra, const std::string& tail, int width) {
  int pct = 100;
  if (total > 0)
    pct = static_cast<int>(static_cast<double>(std::clamp<int64_t>(done, 0, total)) * 100.0 /
                           static_cast<double>(total));
  if (total > 0 && done < total) pct = std::min(pct, 99);
  std::string s = label.empty() ? "" : label + " ";
  s += cat(format_bar(done, total, width), " ", done, "/", total, " ", pct, "%");
  if (!extra.empty()) s += " | " + extra;
  if (!tail.empty()) s += " | " + tail;
  return s;
}

SmoothedRate::SmoothedRate(double weight) : weight_(weight) {
  SPARTA_CHECK(weight > 0 && weight <= 1, "[progress] smoothing weight must be in (0, 1], got ", weight);
}

double SmoothedRate::add(double amount, double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds) || !std::isfinite(amount)) return rate();
  if (empty_) {
    amount_ = amount, seconds_ = seconds, empty_ = false;
  } else {
    amount_ += weight_ * (amount - amount_);
    seconds_ += weight_ * (seconds - seconds_);
  }
  return rate();
}

double SmoothedRate::rate() const { return empty_ ? 0.0 : amount_ / seconds_; }

ProgressBar::ProgressBar(int64_t total, std::string label, std::FILE* out, ProgressOptions opts)
    : total_(total), label_(std::move(label)), out_(out), opts_(std::move(opts)) {
  SPARTA_CHECK(out_ != nullptr, "[progress] output stream is null");
  tty_ = opts_.tty ? *opts_.tty : ::isatty(fileno(out_)) == 1;
  start_t_ = now();
}

ProgressBar::~ProgressBar() {
  // Leave the terminal on a fresh line if we were interrupted (exception).
  if (!finished_ && tty_ && drawn_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

double ProgressBar::now() const {
  if (opts_.clock) return opts_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double ProgressBar::eta_seconds() const {
  if (start_done_ < 0 || done_ <= start_done_) return -1;
  const double elapsed = now() - start_done_t_;
  if (elapsed <= 0) return -1;
  const double rate = static_cast<double>(done_ - start_done_) / elapsed;
  return static_cast<double>(std::max<int64_t>(total_ - done_, 0)) / rate;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (finished_) return;
  const double t = now();
  if (start_done_ < 0) {
    start_done_ = done;
    start_done_t_ = t;
  }
  done_ = done;
  extra_ = extra;
  bool due;
  if (tty_) {
    due = t - last_draw_t_ >= opts_.min_redraw_s;
  } else {
    const int step = std::max(opts_.plain_percent_step, 1);
    const int64_t d = std::clamp<int64_t>(done, 0, std::max<int64_t>(total_, 0));
    const int bucket =
        total_ > 0 ? static_cast<int>(static_cast<double>(d) * 100.0 / static_cast<double>(total_)) / step
                   : 0;
    due = bucket > last_bucket_ || t - last_draw_t_ >= opts_.plain_interval_s;
    if (due) last_bucket_ = std::max(last_bucket_, bucket);
  }
  if (due) draw(false);
}

void ProgressBar::set_status(const std::string& extra) {
  if (finished_) return;
  extra_ = extra;
  if (tty_) draw(false);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final_line) {
  const double t = now();
  last_draw_t_ = t;
  const std::string tail =
      final_line ? "done in " + format_duration(t - start_t_) : "ETA " + format_duration(eta_seconds());
  std::string line = format_progress_line(label_, done_, total_, extra_, tail, opts_.width);
  if (tty_) {
    // A line wider than the terminal would wrap and '\r' could no longer
    // return to its start, so clip it.
    const int cols = terminal_columns(out_);
    if (cols > 1 && line.size() >= static_cast<size_t>(cols)) line.resize(static_cast<size_t>(cols - 1));
    const size_t len = line.size();
    // Overwrite leftovers of a longer previous line with spaces.
    if (len < last_len_) line.append(last_len_ - len, ' ');
    last_len_ = len;
    std::fputc('\r', out_);
    std::fputs(line.c_str(), out_);
    if (final_line) std::fputc('\n', out_);
  } else {
    std::fputs(line.c_str(), out_);
    std::fputc('\n', out_);
  }
  std::fflush(out_);
  drawn_ = true;
}

}  // namespace sparta
