#pragma once
// Each `sparta` sub-command registers itself on the CLI11 app; the handler
// runs after parsing and may throw sparta::Error (main prints one line).
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace sparta::cli {

void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_bench_command(CLI::App& app);
// `bench attention`, registered by add_bench_command on its `bench` sub-command.
void add_bench_attention_command(CLI::App& bench);
void add_sweep_command(CLI::App& app);

// The command line that runs `sparta` (as this process was started) with
// `args`, each shell-quoted where needed: what an interrupted command tells
// the user to run to continue.
std::string resume_command(const std::vector<std::string>& args);

}  // namespace sparta::cli
