#pragma once
// Counts with their noun in the right number for messages: "1 thread",
// "2 threads", "0 runs". Every count a user reads goes through this, so no
// message says "1 threads".
#include <cstdint>
#include <string>
#include <string_view>

namespace sparta {

// "<n> <singular>" when n == 1 (or -1), else "<n> <plural>"; plural empty =
// singular + "s".
inline std::string count_noun(int64_t n, std::string_view singular, std::string_view plural = {}) {
  std::string s = std::to_string(n);
  s += ' ';
  if (n == 1 || n == -1)
    s += singular;
  else if (plural.empty())
    (s += singular) += 's';
  else
    s += plural;
  return s;
}

}  // namespace sparta
