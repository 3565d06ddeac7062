#include "config/toml_text.h"

#include <cstddef>

namespace troupe::model {
namespace {

struct Scan {
  std::string_view t;
  size_t i = 0;
  int line = 1;

  bool at(std::string_view s) const { return t.substr(i, s.size()) == s; }
  void step() {
    if (t[i] == '\n') ++line;
    ++i;
  }
  // A string opened by quote q at i: skips it, its closing quotes included (to the end of
  // the line for a single-line string left open: toml++ reports that one).
  void skip_string(char q) {
    const std::string_view three(q == '"' ? "\"\"\"" : "'''");
    const bool multi = at(three);
    i += multi ? 3 : 1;
    while (i < t.size()) {
      if (q == '"' && t[i] == '\\' && i + 1 < t.size()) {
        step(), step();
        continue;
      }
      if (multi && at(three)) {
        i += 3;
        for (int extra = 0; extra < 2 && i < t.size() && t[i] == q; ++extra) ++i;  // """a""""
        return;
      }
      if (!multi && (t[i] == q || t[i] == '\n')) {
        if (t[i] == q) ++i;
        return;
      }
      step();
    }
  }
};

}  // namespace

int bare_non_ascii_line(std::string_view text) {
  Scan s{text};
  while (s.i < text.size()) {
    const char c = text[s.i];
    if (c == '#') {
      while (s.i < text.size() && text[s.i] != '\n') ++s.i;
    } else if (c == '"' || c == '\'') {
      s.skip_string(c);
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      return s.line;
    } else {
      s.step();
    }
  }
  return 0;
}

}  // namespace troupe::model
