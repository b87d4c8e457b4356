// sparta — train, evaluate and sample GPT models on the CPU.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/crash_report.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/memory.h"

int main(int argc, char** argv) {
  sparta::install_crash_handlers("sparta");
  sparta::retain_freed_memory();  // a refusal only costs speed
  CLI::App app{"sparta: a C++ engine that trains and serves transformer models on the CPU", "sparta"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sparta 0.1.0");
  sparta::cli::add_train_command(app);
  sparta::cli::add_generate_command(app);
  sparta::cli::add_eval_command(app);
  sparta::cli::add_info_command(app);
  sparta::cli::add_tokenize_command(app);
  sparta::cli::add_bench_command(app);
  sparta::cli::add_sweep_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const sparta::Interrupted& e) {
    return e.exit_status();  // stopped cleanly on SIGINT/SIGTERM; the command said where
  } catch (const sparta::AlreadyReported&) {
    return 1;
  } catch (const sparta::Error& e) {
    std::fprintf(stderr, "sparta: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sparta: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparta: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
