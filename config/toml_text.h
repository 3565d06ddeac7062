#pragma once
// A check of a TOML text before toml++ parses it: TOML allows characters outside ASCII only
// in strings and comments, and a stray 'é' after a value is refused here with a message that
// says so and names the line (toml++'s own would be about the value it could not read).
// (This check once guarded against undefined behaviour in toml++ on such characters; it
// could not, as toml++ reads past quotes after a bad value: config/toml.h fixes that now.)
#include <string_view>

namespace troupe::model {

// The 1-based line of the first byte outside the ASCII range that is not inside a string
// (basic, literal, multi-line) or a comment; 0 when there is none.
int bare_non_ascii_line(std::string_view text);

}  // namespace troupe::model
