#include "train/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "dist/agreement.h"
#include "dist/process_group.h"
#include "data/synthetic_tasks.h"
#include "data/text_corpus.h"
#include "data/token_dataset.h"
#include "eval/evaluate.h"
#include "io/atomic_file.h"
#include "io/checkpoint_store.h"
#include "io/run_lock.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "ops/grad_clip.h"
#include "plot/loss_plot.h"
#include "run/checkpoint_load.h"
#include "run/run_setup.h"
#include "train/checkpoint_save.h"
#include "train/data_parallel.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"
#include "train/train_memory.h"

namespace sparta {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string override_key(const std::string& kv) { return kv.substr(0, kv.find('=')); }

bool resume_may_change(const std::string& key) {
  const auto& safe = resume_safe_keys();
  return std::find(safe.begin(), safe.end(), key) != safe.end();
}

// The --set overrides a resumed run applies to the checkpoint's config.
std::vector<std::string> resume_overrides(const std::vector<std::string>& sets) {
  std::vector<std::string> out;
  for (const std::string& kv : sets)
    if (resume_may_change(override_key(kv))) out.push_back(kv);
  return out;
}

// Every other --set must repeat the checkpoint's value: a resumed run is
// the run that was interrupted, not a new one with the old weights.
void check_resume_sets(const Config& saved, const std::vector<std::string>& sets) {
  for (const std::string& kv : sets) {
    const std::string key = override_key(kv);
    if (resume_may_change(key)) continue;
    Config probe = saved;
    apply_overrides(probe, {kv});
    const std::string was = config_value(saved, key), wants = config_value(probe, key);
    if (was == wants) continue;
    std::string safe;
    for (const std::string& k : resume_safe_keys()) safe += (safe.empty() ? "" : ", ") + k;
    throw Error(cat("[train] --resume: ", key, " is ", was, " in the checkpoint but --set gives ", wants, "; only ",
                    safe, " may change on resume (use train.init_from to start a new run from these weights)"));
  }
}

// What sparta writes into a run folder besides checkpoints (and the
// atomic-write scratch of each). Starting over removes exactly these.
const char* const kRunFiles[] = {"metrics.jsonl", "loss.svg", "summary.json"};

void remove_run_outputs(const fs::path& out) {
  remove_all_checkpoints(out);
  for (const char* name : kRunFiles)
    for (const fs::path& p : {out / name, out / (std::string(name) + ".tmp")}) {
      std::error_code ec;
      fs::remove(p, ec);
      SPARTA_CHECK(!ec, "[train] cannot remove '", p.string(), "': ", ec.message());
    }
}

// A run that fails before its first step must not leave an empty run folder
// behind: the folder is removed unless keep() was called (only if this
// process created it).
class NewFolderGuard {
 public:
  NewFolderGuard(fs::path dir, bool created) : dir_(std::move(dir)), armed_(created) {}
  ~NewFolderGuard() {
    std::error_code ec;
    if (armed_) fs::remove_all(dir_, ec);
  }
  void keep() { armed_ = false; }

 private:
  fs::path dir_;
  bool armed_;
};

// On resume, metrics written after the checkpoint by the interrupted run are
// dropped so the file reads as one uninterrupted run.
void truncate_metrics(const fs::path& file, int64_t keep_upto_step) {
  if (!fs::exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;  // a torn last line from a kill
    if (j["step"].get<int64_t>() <= keep_upto_step) kept += line + "\n";
  }
  write_file_atomic(file, kept);
}

void read_metric_points(const fs::path& file, std::vector<std::pair<double, double>>& train,
                        std::vector<std::pair<double, double>>& val) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    double s = j["step"].get<double>();
    if (j.contains("loss")) train.emplace_back(s, j["loss"].get<double>());
    if (j.contains("val_loss")) val.emplace_back(s, j["val_loss"].get<double>());
  }
}

// Reports go nowhere when the caller gave no reporter.
TrainReporter& reporter_of(const TrainOptions& opt) {
  static TrainReporter silent;
  return opt.reporter ? *opt.reporter : silent;
}

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}


// Everything a run needs before its first step. Built by set_up_run on every
// rank; only rank 0 (the writer) touches the run folder.
struct RunSetup {
  Config cfg;
  std::optional<RunLock> lock;
  std::optional<NewFolderGuard> new_folder;
  std::optional<fs::path> latest;  // the checkpoint resumed from
  std::vector<std::string> notices;  // from reading the data, shown once the run starts
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<GPT> model;
  TrainState state;
  bool is_task = false;
  TokenSplit split;
  std::optional<BatchSampler> sampler;
  TaskConfig task;
  std::optional<AdamW> adamw;
  std::optional<DataParallel> dp;
};

void set_up_run(RunSetup& s, const Config& requested, const TrainOptions& opt, dist::ProcessGroup& group) {
  const bool writer = group.rank() == 0;
  const fs::path out = requested.train.out;
  SPARTA_CHECK(!(opt.resume && opt.force), "[train] --resume continues the run in '", out.string(),
               "' and --force deletes it; pass one of them");
  SPARTA_CHECK(!opt.resume || fs::is_directory(out), "[train] --resume: run folder '", out.string(),
               "' (train.out) does not exist; start without --resume");
  if (writer) {
    std::error_code ec;
    const bool created = !fs::exists(out);
    fs::create_directories(out, ec);
    SPARTA_CHECK(!ec, "[train] cannot create output folder '", out.string(), "': ", ec.message());
    s.lock.emplace(out, "train", "wait for it or use another train.out");
    s.new_folder.emplace(out, created);
  }

  std::optional<fs::path>& latest = s.latest;
  latest = latest_checkpoint(out);
  SPARTA_CHECK(latest || !opt.resume, "[train] --resume: '", out.string(),
               "' holds no checkpoint to resume (no LATEST); start without --resume");
  if (latest && !opt.resume && !opt.force)
    throw Error(cat("[train] '", out.string(), "' already holds a run (", latest->filename().string(),
                    "); pass --resume to continue it, --force to start over, or set train.out"));
  if (!opt.resume) latest.reset();

  // A resumed run is the interrupted run: its config comes from the
  // checkpoint; --set may only change what resume_safe_keys() lists.
  Config& cfg = s.cfg;
  cfg = requested;
  std::optional<LoadedCheckpoint> resumed;
  if (latest) {
    resumed = load_checkpoint(*latest, resume_overrides(opt.sets));
    check_resume_sets(resumed->config, opt.sets);
    cfg = resumed->config;
    cfg.train.out = requested.train.out;
    const int64_t at = resumed->state.step;
    SPARTA_CHECK(cfg.train.steps != at, "[train] --resume: the run in '", out.string(), "' is finished (step ", at,
                 " of train.steps = ", at, "); to train further pass --set train.steps=N with N > ", at);
    SPARTA_CHECK(cfg.train.steps > at, "[train] --resume: train.steps = ", cfg.train.steps,
                 " is below the checkpoint's step ", at, " (", latest->string(), ")");
    SPARTA_CHECK(opt.until == 0 || opt.until > at, "[train] --resume --until ", opt.until, ": the run in '",
                 out.string(), "' is already at step ", at);
  }
  check_batch_splits(cfg.train.batch_size, group.size());
  group.set_timeout(cfg.dist.timeout_s);
  // Before reading the corpus or allocating anything.
  check_train_memory(cfg, mem_available_bytes(), group.size(), group.local_size());
  const int machine_cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  init_compute_threads(cfg.train.threads > 0 ? static_cast<int>(cfg.train.threads)
                                             : data_parallel_threads(usable_cores(), machine_cores,
                                                                     group.local_size()));

  s.is_task = !cfg.data.task.empty();
  const bool is_task = s.is_task;
  // A synthetic task needs text only to train a WordPiece vocabulary.
  const bool needs_text = !is_task || (cfg.tokenizer.kind == "wordpiece" && cfg.tokenizer.vocab_file.empty());
  TextCorpus corpus;
  if (needs_text) {
    SPARTA_CHECK(!cfg.data.train.empty(), "[train] data.train is not set (a UTF-8 text file or folder)",
                 is_task ? " — the task needs it to train the WordPiece vocabulary" : "");
    corpus = read_text_corpus(cfg.data.train, "data.train");
    s.notices = corpus.notices;
  }

  std::unique_ptr<Tokenizer>& tok = s.tok;
  std::unique_ptr<GPT>& model = s.model;
  TrainState& state = s.state;
  if (resumed) {
    tok = std::move(resumed->tokenizer);
    model = std::move(resumed->model);
    state = resumed->state;
  } else if (!cfg.train.init_from.empty()) {
    // Weights only (e.g. a model trained on short sequences, continued on
    // long ones): the checkpoint is rebuilt with this run's context, RoPE,
    // attention and precision settings, which carry no weights (raising the RoPE base
    // when extending the context is a known way to continue a model on
    // longer sequences).
    LoadedCheckpoint ck = load_checkpoint(cfg.train.init_from, {},
                                          [&](Config& c) { copy_weightless_model_settings(cfg, c); });
    const std::string differs = config_difference(ck.config, cfg, weight_shape_keys(), "the checkpoint", "this run");
    SPARTA_CHECK(differs.empty(), "[train] train.init_from: ", ck.dir.string(), ": ", differs,
                 " (only model.context, RoPE and the attention settings may differ)");
    tok = std::move(ck.tokenizer);
    model = std::move(ck.model);
    Rng init_rng(static_cast<uint64_t>(cfg.train.seed));
    (void)init_rng.next_u64();  // the draw a random init would have used: the data stream stays the same
    state.rng = init_rng.state();
  } else {
    tok = build_tokenizer(cfg, corpus);
    model = std::make_unique<GPT>(gpt_config_from(cfg, tok->vocab_size()));
    Rng init_rng(static_cast<uint64_t>(cfg.train.seed));
    model->init_weights(init_rng.next_u64());
    state.rng = init_rng.state();
  }
  const uint64_t seed = static_cast<uint64_t>(cfg.train.seed);
  if (is_task) {
    s.task = task_config_from(cfg);
    check_task_config(s.task, *tok);
  } else {
    s.split = tokenize_and_split(corpus, *tok, cfg.data.val_fraction);
    s.sampler.emplace(s.split.train, cfg.model.context, seed);
  }

  AdamWHyper hyper;
  hyper.beta1 = static_cast<float>(cfg.train.beta1);
  hyper.beta2 = static_cast<float>(cfg.train.beta2);
  hyper.eps = static_cast<float>(cfg.train.eps);
  hyper.weight_decay = static_cast<float>(cfg.train.weight_decay);
  s.adamw.emplace(model->params(), hyper);
  if (latest) load_optimizer_state(*latest, *s.adamw, *model);

  s.dp.emplace(group, cfg, model->params().size(), model->gradients_final_order());
  if (latest)
    if (std::string note = s.dp->restore_residuals(*latest, state.ranks); !note.empty()) s.notices.push_back(note);
  state.ranks = group.size();

  if (writer) {
    const fs::path metrics_file = out / "metrics.jsonl";
    if (latest) {
      truncate_metrics(metrics_file, state.step);
    } else {
      // Starting over (--force, or leftovers of a run killed before its first
      // checkpoint): nothing of an earlier run may remain beside the new one.
      remove_run_outputs(out);
      write_file_atomic(metrics_file, "");
    }
  }
}

}  // namespace

TrainResult run_training(const Config& requested, const TrainOptions& opt) {
  using clock = std::chrono::steady_clock;
  TrainReporter& report = reporter_of(opt);
  std::unique_ptr<dist::ProcessGroup> own_group;
  dist::ProcessGroup& group = opt.group ? *opt.group : *(own_group = dist::make_local_group());
  const bool writer = group.rank() == 0;
  const fs::path out = requested.train.out;

  // Every rank sets up, then they agree: a rank that failed (a bad
  // checkpoint, too little memory) stops every rank at once instead of
  // leaving them waiting in the first step's collectives.
  RunSetup s;
  std::exception_ptr setup_error;
  try {
    set_up_run(s, requested, opt, group);
  } catch (...) {
    setup_error = std::current_exception();
  }
  dist::agree_on_failure(group, setup_error);
  const Config& cfg = s.cfg;
  const std::optional<fs::path>& latest = s.latest;
  Tokenizer* tok = s.tok.get();
  GPT* model = s.model.get();
  TrainState& state = s.state;
  const bool is_task = s.is_task;
  const TokenSplit& split = s.split;
  std::optional<BatchSampler>& sampler = s.sampler;
  const TaskConfig& task = s.task;
  AdamW& adamw = *s.adamw;
  DataParallel& dp = *s.dp;
  for (const std::string& line : s.notices) report.notice(line);
  // The ranks start from the same weights (and then take the same updates).
  dp.check_identical(std::as_const(model->params()).data(), model->params().size(), "before the first step");

  const int64_t B = cfg.train.batch_size, T = cfg.model.context, accum = cfg.train.grad_accum;
  const int64_t b = dp.local_rows();  // this rank's rows of each micro-batch
  const uint64_t seed = static_cast<uint64_t>(cfg.train.seed);

  const fs::path metrics_file = out / "metrics.jsonl";
  std::ofstream metrics;
  if (writer) {
    metrics.open(metrics_file, std::ios::app);
    SPARTA_CHECK(metrics.good(), "[train] cannot write ", metrics_file.string());
  }

  TrainStart start;
  start.parameters = model->params().count();
  start.tokenizer = tok->kind();
  start.vocab_size = tok->vocab_size();
  if (is_task) {
    start.task = task.kind;
    start.task_tokens = T;
  } else {
    start.train_tokens = static_cast<int64_t>(split.train.size());
    start.val_tokens = static_cast<int64_t>(split.val.size());
  }
  start.threads = compute_threads();
  start.ranks = dp.ranks();
  if (dp.ranks() > 1) {
    start.compress = cfg.dist.compress;
    start.buckets = static_cast<int64_t>(dp.buckets().size());
    start.overlapped = dp.overlapped();
  }
  if (latest) start.resumed_from = state.step;
  start.first_step = state.step;
  start.total_steps = cfg.train.steps;
  report.started(start);

  // After every check that can refuse the run, so an error stays one line.
  for (const std::string& w : config_warnings(cfg)) report.notice("warning: " + w);
  // Asked only for a caller that shows it: it is given once per process.
  if (opt.reporter)
    if (const std::string w = machine_load_warning_once(); !w.empty()) report.notice("warning: " + w);

  std::vector<int32_t> inputs(B * accum * T), targets(B * accum * T);
  // This rank's slice of them (the same buffers for a single process).
  std::vector<int32_t> local_inputs(dp.ranks() > 1 ? b * accum * T : 0), local_targets(local_inputs.size());
  int32_t* my_inputs = dp.ranks() > 1 ? local_inputs.data() : inputs.data();
  int32_t* my_targets = dp.ranks() > 1 ? local_targets.data() : targets.data();
  GPTActivations acts;  // one micro-batch in Train mode; evaluation reuses it
  const int64_t total = cfg.train.steps;
  std::vector<double> rates;
  TrainResult result;
  double last_loss = 0.0;
  auto plot = [&] {
    std::vector<std::pair<double, double>> tr, va;
    read_metric_points(metrics_file, tr, va);
    write_loss_plot_svg(out / "loss.svg", tr, va, "sparta: " + out.filename().string());
  };
  const int64_t stop = opt.until > 0 ? std::min(opt.until, total) : total;
  int64_t saved_step = latest ? state.step : -1;
  int64_t bad_in_row = 0;
  // fp16 dynamic loss scaling; its state lives in TrainState (checkpointed).
  std::optional<LossScaler> scaler;
  if (parse_precision(cfg.train.precision) == Precision::FP16 && cfg.precision.loss_scaling) {
    scaler.emplace(LossScalerConfig{cfg.precision.init_scale, cfg.precision.growth_factor,
                                    cfg.precision.backoff_factor, cfg.precision.growth_interval});
    if (state.loss_scale > 0) scaler->restore(state.loss_scale, state.loss_scale_good_steps);
  } else {
    state.loss_scale = 0.0;
  }
  for (int64_t step = state.step; step < stop; ++step) {
    auto t0 = clock::now();
    // The whole step's rows are drawn at once, so grad_accum micro-batches of
    // B rows see exactly the data of one batch of grad_accum·B rows.
    if (is_task)
      next_task_batch(task, *tok, seed, inputs.data(), targets.data(), B * accum, state.cursor);
    else
      sampler->next(inputs.data(), targets.data(), B * accum, state.cursor);
    float lr = lr_at(step, static_cast<float>(cfg.train.lr), cfg.train.warmup, total,
                     static_cast<float>(cfg.train.min_lr_ratio));
    // Exploration noise of sparse attention: a pure function of (seed, step),
    // so a resumed run draws exactly what the uninterrupted one did.
    const uint64_t selection_seed = (seed * 0xd1342543de82ef95ULL + static_cast<uint64_t>(step)) | 1;
    const double scale_used = scaler ? scaler->scale() : 1.0;
    float loss = 0.0f;
    bool exchanged = true;
    if (dp.ranks() == 1) {
      loss = lm_loss_and_gradients(*model, acts, inputs.data(), targets.data(), B, T, selection_seed, accum,
                                   scale_used);
    } else {
      // Each rank: its rows, scaled by the whole step's target count; the
      // sum over ranks (gradients and loss parts) is the single-process step.
      dp.take_slice(inputs.data(), my_inputs, accum, T);
      dp.take_slice(targets.data(), my_targets, accum, T);
      const int64_t counted = dp.step_targets(count_targets(my_targets, accum * b * T));
      // Each bucket of gradients leaves while backward computes the layers
      // below it.
      dp.begin_step(model->params().grad(), step);
      const GradientsFinal final = [&dp](int64_t from) { dp.gradients_final_from(from); };
      // This rank's rows are sequences rank·b, ... of each micro-batch of B.
      const float part = lm_loss_and_gradients(*model, acts, my_inputs, my_targets, b, T,
                                               SelectionNoise{selection_seed, dp.rank() * b}, accum, scale_used,
                                               counted, 1.0 / dp.ranks(), &final, B);
      exchanged = dp.finish_step();
      loss = static_cast<float>(dp.sum(part));
    }
    // fp16: back to true gradients; an inf/NaN among them means the scale
    // was too large for FP16's range: the step is skipped, the scale lowered.
    bool overflow = false;
    if (scaler) {
      overflow = !std::isfinite(loss) ||
                 !LossScaler::unscale(model->params().grad(), model->params().size(), scale_used);
      scaler->update(overflow);
      state.loss_scale = scaler->scale();
      state.loss_scale_good_steps = scaler->good_steps();
    }
    const double norm = std::isfinite(loss) && !overflow && exchanged
                            ? ops::clip_grad_norm(model->params().grad(), model->params().size(), cfg.train.grad_clip)
                            : std::nan("");
    // A non-finite loss or gradient would poison the weights and the AdamW
    // moments for good: skip the update; several in a row mean divergence.
    const bool skipped = !std::isfinite(loss) || overflow || !std::isfinite(norm);
    std::string skip_reason;
    if (skipped) {
      const auto text = [](double v) { return std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf"; };
      if (!std::isfinite(loss))
        skip_reason = cat("loss is ", text(loss));
      else if (overflow)
        skip_reason = cat("gradient overflow at loss scale ", scale_used, "; scale lowered to ", scaler->scale());
      else
        skip_reason = cat("gradient norm is ", text(norm));
      // Backing off from too large a scale is routine; a scale below 1
      // that still overflows is divergence like any other.
      if (!overflow || !std::isfinite(loss) || scale_used < 1.0) ++bad_in_row;
      report.step_skipped(step + 1, skip_reason);
    } else {
      bad_in_row = 0;
      adamw.step(lr);
      last_loss = loss;
    }
    double secs = std::chrono::duration<double>(clock::now() - t0).count();
    state.step = step + 1;
    const int64_t step_tokens = B * accum * T;
    state.tokens_seen += step_tokens;
    double tps = static_cast<double>(step_tokens) / secs;
    rates.push_back(tps);

    json rec = skipped ? json{{"step", state.step}, {"skipped", true}, {"reason", skip_reason}, {"lr", lr},
                              {"tokens_per_s", tps}, {"step_ms", secs * 1e3}}
                       : json{{"step", state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                              {"tokens_per_s", tps}, {"step_ms", secs * 1e3}};
    if (scaler) {
      rec["loss_scale"] = scale_used;
      rec["skipped"] = skipped;
    }
    if (dp.ranks() > 1) {
      rec["comm_bytes"] = dp.last_bytes();
      rec["comm_ms"] = dp.last_ms();
      rec["comm_wait_ms"] = dp.last_wait_ms();
      rec["compress"] = dp.last_mode();
    }
    if (skipped && bad_in_row >= cfg.train.max_bad_steps) {
      if (writer) {
        metrics << rec.dump() << "\n";
        metrics.flush();
      }
      // Every rank stops here alike; rank 0 says why.
      if (!writer) throw AlreadyReported("[train] training diverged");
      throw JobStopped(cat("[train] ", bad_in_row, " steps in a row had a non-finite loss or gradient norm (steps ",
                      state.step - bad_in_row + 1, "-", state.step, "): training diverged; lower train.lr, set "
                      "train.grad_clip, or resume from the last checkpoint with a higher train.max_bad_steps"));
    }
    bool last = state.step == total;
    bool do_eval = (is_task || !split.val.empty()) &&
                   ((cfg.train.eval_every > 0 && state.step % cfg.train.eval_every == 0) || last);
    if (do_eval) {
      // An evaluation cut short by Ctrl-C is partial: it is not recorded.
      report.evaluating(state.step, loss);
      if (is_task) {
        TaskEvalResult ev = evaluate_task(*model, acts, task, *tok, task_validation_seed(seed),
                                          cfg.data.task_eval_examples, B, dp.eval_shard());
        if (!ev.partial) {
          rec["val_loss"] = ev.loss;
          rec["val_accuracy"] = ev.accuracy;
          result.final_val_loss = ev.loss;
        }
      } else {
        EvalResult ev = evaluate_tokens(*model, acts, split.val, B, cfg.train.eval_batches, dp.eval_shard());
        if (!ev.partial) {
          rec["val_loss"] = ev.loss;
          result.final_val_loss = ev.loss;
        }
      }
      do_eval = rec.contains("val_loss");
    }
    if (writer) {
      metrics << rec.dump() << "\n";
      metrics.flush();
      s.new_folder->keep();
    }
    if (do_eval && writer) {
      plot();
      EvalReport ev{state.step, total, loss, rec["val_loss"].get<double>(), std::nullopt};
      if (rec.contains("val_accuracy")) ev.val_accuracy = rec["val_accuracy"].get<double>();
      report.evaluated(ev);
    }
    bool do_ckpt = (cfg.train.ckpt_every > 0 && state.step % cfg.train.ckpt_every == 0) || last || state.step == stop;
    // Interrupted on the last step, the run simply completes. A signal that
    // reached one rank stops them all.
    const bool interrupted = dp.any(interrupt_requested()) && state.step < stop;
    if (do_ckpt || interrupted) {
      fs::path ckpt = out / checkpoint_folder_name(state.step);
      if (saved_step != state.step) {
        dp.check_identical(std::as_const(model->params()).data(), model->params().size(),
                           cat("after step ", state.step));
        dp.collect_residuals();
        if (writer)
          ckpt = save_checkpoint(out, cfg, *model, adamw, state, *tok,
                                 [&](const fs::path& dir) { dp.write_residuals(dir); });
      }
      saved_step = state.step;
      if (interrupted) {
        if (writer) plot();
        throw Interrupted(interrupt_signal(),
                          cat("[train] ", interrupt_signal_name(), ": stopped after step ", state.step, " of ", total,
                              "; checkpoint ", ckpt.string(), " written"));
      }
    }
    report.step_done({state.step, total, last_loss, step_tokens, secs});
  }
  report.finished();
  if (writer) plot();

  result.steps = state.step;
  result.final_loss = last_loss;
  if (!rates.empty()) {
    std::vector<double> r = rates;
    std::nth_element(r.begin(), r.begin() + r.size() / 2, r.end());
    result.median_tokens_per_s = r[r.size() / 2];
  }
  result.peak_tracked_bytes = memory_stats().peak_bytes;
  json summary = {{"steps", result.steps},
                  {"final_loss", result.final_loss},
                  {"median_tokens_per_s", result.median_tokens_per_s},
                  {"peak_tracked_mb", static_cast<double>(result.peak_tracked_bytes) / (1 << 20)},
                  {"peak_rss_mb", peak_rss_mb()},
                  {"parameters", model->params().count()},
                  {"threads", compute_threads()}};
  if (result.final_val_loss >= 0) summary["final_val_loss"] = result.final_val_loss;
  if (dp.ranks() > 1) {
    summary["ranks"] = dp.ranks();
    summary["compress"] = cfg.dist.compress;
  }
  if (writer) write_file_atomic(out / "summary.json", summary.dump(2) + "\n");
  return result;
}

}  // namespace sparta
