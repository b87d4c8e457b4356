// resume_command (commands.h): the line an interrupted command prints.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace sparta::cli {

std::string resume_command(const std::vector<std::string>& args) {
  // argv[0] as this process was started, so the printed line runs the same binary.
  std::string program = "sparta";
  if (std::FILE* f = std::fopen("/proc/self/cmdline", "rb")) {
    std::string first;
    for (int c; (c = std::fgetc(f)) != EOF && c != '\0';) first += static_cast<char>(c);
    std::fclose(f);
    if (!first.empty()) program = first;
  }
  auto quote = [](const std::string& a) {
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                           "0123456789_-+=.,/:@%") == std::string::npos;
    if (plain) return a;
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string line = quote(program);
  for (const std::string& a : args) line += " " + quote(a);
  return line;
}

}  // namespace sparta::cli
