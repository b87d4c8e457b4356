#pragma once
// A last word from a crashing process. A fatal signal (SIGSEGV, SIGBUS,
// SIGILL, SIGFPE, SIGABRT — the last also what glibc raises on a corrupted
// heap) would otherwise end sparta with only the shell's "Aborted"; with the
// handler it first writes one line naming the signal and a backtrace to
// stderr, then dies of the same signal (exit status and core dump as before).
// Everything it does is async-signal-safe: write(2) and backtrace(3), which
// install_crash_handlers() warms up so it never allocates in the handler.

namespace sparta {

// Installs the handlers (idempotent); `program` prefixes the report.
void install_crash_handlers(const char* program);

}  // namespace sparta
