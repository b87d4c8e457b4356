#pragma once
// Graceful stop on Ctrl-C (SIGINT) and SIGTERM for long-running commands
// (train, sweep, bench attention). The first signal only sets a flag: the
// work polls interrupt_requested() at safe points (after a training step,
// between measurements), saves what it has and throws Interrupted; main
// turns that into exit status 128 + signal (130 for SIGINT, 143 for
// SIGTERM). A second signal ends the process at once with the same status
// — whatever was committed before (e.g. the last complete checkpoint)
// stays valid, since every write is atomic.
#include <stdexcept>
#include <string>

namespace sparta {

// Installs the SIGINT and SIGTERM handlers (idempotent). Commands that do
// not call it keep the default behaviour (die at once).
void install_interrupt_handlers();

// True once SIGINT or SIGTERM arrived after install_interrupt_handlers().
bool interrupt_requested();

// The signal that arrived first (SIGINT or SIGTERM); 0 when none.
int interrupt_signal();

// "SIGINT" / "SIGTERM" for interrupt_signal().
const char* interrupt_signal_name();

// Thrown once the interrupted work has stopped cleanly; what() says where
// it stopped (printed by the command, not treated as an error).
class Interrupted : public std::runtime_error {
 public:
  Interrupted(int signal, const std::string& where) : std::runtime_error(where), signal_(signal) {}
  int signal() const { return signal_; }
  int exit_status() const { return 128 + signal_; }

 private:
  int signal_;
};

}  // namespace sparta
