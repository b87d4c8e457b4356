#pragma once
// Screens TOML text before it reaches toml++. The toml++ 3.3.0 that Debian
// 12 ships has undefined behaviour (it reaches TOML_UNREACHABLE in
// is_non_ascii_horizontal_whitespace) whenever it asks whether certain
// non-ASCII characters (U+00A1..U+0499, U+2C5E..U+3057, U+FB26..U+FEFE, in
// part) are whitespace. It asks that of every character outside strings and
// comments (a number, boolean or date is read up to a value terminator,
// quotes included), of a character after a backslash in a multi-line basic
// string, and of the first character after a line-ending backslash's
// skipped whitespace. TOML allows non-ASCII only inside strings and
// comments, so the guard:
//   - rejects ill-formed UTF-8 (line and column of the first bad byte);
//   - rejects any non-ASCII character outside strings and comments (a
//     quote inside a bare value opens no string), and one right after a
//     backslash in a basic string (not a valid escape);
//   - rewrites the first character after a line-ending backslash in a
//     multi-line basic string, when it is non-ASCII, as its \uXXXX or
//     \UXXXXXXXX escape (the same string, as TOML defines it).
// A leading byte-order mark is kept. Everything else passes unchanged, so
// valid TOML keeps its meaning. Errors are sparta::Error:
// "[config] SOURCE:LINE:COLUMN: ...".
#include <string>
#include <string_view>

namespace sparta {

std::string guard_toml_text(std::string_view text, const std::string& source);

}  // namespace sparta
