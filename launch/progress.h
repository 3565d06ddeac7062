#pragma once
// The one progress line of a training job: updated in place on a terminal, printed every
// few steps otherwise (logs, CI).
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace troupe::launch {

inline std::string format_duration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(s / 3600), long(s / 60 % 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lds", long(s));
  return buf;
}

class Progress {
 public:
  explicit Progress(int64_t total_steps)
      : total_(total_steps),
        tty_(isatty(fileno(stderr))),
        every_(total_steps >= 20 ? total_steps / 20 : 1) {}

  // Called after each step with the loss, lr and the step's throughput.
  // reward: a GRPO step's mean reward (-1: a supervised step, not shown).
  void step(int64_t step, double loss, double lr, double tokens_per_s, double elapsed_s,
            double reward = -1) {
    const int64_t done = step + 1;
    const double eta = elapsed_s / double(done) * double(total_ - done);
    char line[256], r[32] = "";
    if (reward >= 0) std::snprintf(r, sizeof r, "  reward %.3f", reward);
    std::snprintf(line, sizeof line, "step %5ld/%ld  loss %.4f%s  lr %.2e  %8.0f tok/s  ETA %s",
                  long(done), long(total_), loss, r, lr, tokens_per_s,
                  format_duration(eta).c_str());
    if (tty_) {
      std::fprintf(stderr, "\r%-90s", line);
    } else if (done % every_ == 0 || done == total_ || done == 1) {
      std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
  }

  void note(const std::string& text) {
    std::fprintf(stderr, tty_ ? "\r%-90s\n" : "%s\n", text.c_str());
    std::fflush(stderr);
  }

  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_;
  bool tty_;
  int64_t every_;
};

}  // namespace troupe::launch
