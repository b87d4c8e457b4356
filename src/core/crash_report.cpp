#include "core/crash_report.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>

namespace sparta {

namespace {

const char* g_program = "sparta";
// Own stack for the handler: a stack overflow leaves none on the thread's.
alignas(16) char g_alt_stack[64 * 1024];

void put(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t k = ::write(STDERR_FILENO, s, n);
    if (k <= 0) return;
    s += k;
    n -= static_cast<size_t>(k);
  }
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV (invalid memory access)";
    case SIGBUS: return "SIGBUS (bus error)";
    case SIGILL: return "SIGILL (illegal instruction)";
    case SIGFPE: return "SIGFPE (arithmetic exception)";
    case SIGABRT: return "SIGABRT (aborted)";
    default: return "fatal signal";
  }
}

void on_fatal_signal(int sig) {
  put(g_program);
  put(": fatal error: ");
  put(signal_name(sig));
  put(" — a bug in sparta; please report it with this backtrace:\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  // Die of the same signal: SA_RESETHAND restored the default action.
  raise(sig);
}

}  // namespace

void install_crash_handlers(const char* program) {
#if defined(__SANITIZE_ADDRESS__)
  return;  // the sanitizer's own reports say more
#endif
  if (program) g_program = program;
  // backtrace() loads libgcc's unwinder on first use, which allocates:
  // do that now, not on a possibly corrupted heap.
  void* warm[2];
  (void)backtrace(warm, 2);
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(sig, &sa, nullptr);
}

}  // namespace sparta
