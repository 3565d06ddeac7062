#pragma once
// A check of a TOML text before toml++ parses it. toml++ 3.3.0 (Debian's) reaches
// __builtin_unreachable (undefined behaviour) when it asks whether a character outside the
// ASCII range is whitespace, for U+00A1..U+0499 and U+2CEE..U+30E7 ('é', 'ü', Cyrillic,
// kana): any such character outside a string or comment, e.g. a stray 'é' after a value
// (found by tests/fuzz/config_fuzz). TOML allows non-ASCII only in strings and comments, so
// such a text is refused here, naming the line, before toml++ sees it.
#include <string_view>

namespace troupe::model {

// The 1-based line of the first byte outside the ASCII range that is not inside a string
// (basic, literal, multi-line) or a comment; 0 when there is none.
int bare_non_ascii_line(std::string_view text);

}  // namespace troupe::model
