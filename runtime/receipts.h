// "Has every one of N senders answered?" as a set of senders, not a count of messages: a
// duplicated, replayed or late message is refused by name instead of being counted twice.
// A round is keyed by (epoch, step): open() starts one, and a message of another round is
// not part of it. Pure: no actor, no clock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::runtime {

class Receipts {
 public:
  enum class Add { fresh, duplicate, unknown_sender, other_round };

  Receipts() = default;
  // A new round of `senders` expected senders (indices 0..senders-1); forgets the last.
  void open(uint64_t epoch, int64_t step, int64_t senders) {
    epoch_ = epoch, step_ = step;
    from_.assign(size_t(senders > 0 ? senders : 0), waiting);
    waiting_ = int64_t(from_.size());
  }
  // Sender is not part of this round (a worker that owns nothing sends no weights): a
  // message from it is refused as an outsider's.
  void waive(int64_t sender) {
    if (sender < 0 || sender >= int64_t(from_.size()) || from_[size_t(sender)] != waiting) return;
    from_[size_t(sender)] = waived;
    --waiting_;
  }
  // What add() would answer, without noting anything.
  Add check(uint64_t epoch, int64_t step, int64_t sender) const {
    if (epoch != epoch_ || step != step_) return Add::other_round;
    if (sender < 0 || sender >= int64_t(from_.size()) || from_[size_t(sender)] == waived)
      return Add::unknown_sender;
    return from_[size_t(sender)] == received ? Add::duplicate : Add::fresh;
  }
  // Notes sender's answer for (epoch, step); only a fresh one counts.
  Add add(uint64_t epoch, int64_t step, int64_t sender) {
    const Add a = check(epoch, step, sender);
    if (a != Add::fresh) return a;
    from_[size_t(sender)] = received;
    --waiting_;
    return a;
  }
  bool has(int64_t sender) const {
    return sender >= 0 && sender < int64_t(from_.size()) && from_[size_t(sender)] == received;
  }
  // Every expected sender answered (true for a round of none).
  bool complete() const { return waiting_ == 0; }
  int64_t step() const { return step_; }
  uint64_t epoch() const { return epoch_; }
  // The senders not heard from yet, by index (for error messages).
  std::vector<int64_t> missing() const {
    std::vector<int64_t> out;
    for (size_t i = 0; i < from_.size(); ++i)
      if (from_[i] == waiting) out.push_back(int64_t(i));
    return out;
  }

 private:
  enum State : uint8_t { waiting, received, waived };
  uint64_t epoch_ = 0;
  int64_t step_ = -1;
  std::vector<State> from_;
  int64_t waiting_ = 0;
};

inline const char* add_name(Receipts::Add a) {
  switch (a) {
    case Receipts::Add::fresh:
      return "fresh";
    case Receipts::Add::duplicate:
      return "already received from this sender";
    case Receipts::Add::unknown_sender:
      return "a sender outside the round";
    case Receipts::Add::other_round:
      return "another step or epoch than the round in flight";
  }
  return "?";
}

}  // namespace troupe::runtime
