#include "launch/ledger.h"

#include <map>
#include <utility>

namespace troupe::launch {

namespace {

using Pieces = std::vector<std::pair<int64_t, int64_t>>;

struct Commit {
  size_t record = 0;  // its index in the journal's records, for messages
  Pieces pieces;
};

void add_problem(LedgerReport* r, std::string what) {
  if (r->problems.size() < ledger_problems_max)
    r->problems.push_back(std::move(what));
  else
    ++r->problems_left_off;
}

std::string record_name(size_t index, const nlohmann::json& rec) {
  return "record " + std::to_string(index) + " (" + ledger_line(rec) + ")";
}

// A record's integer field, or a problem naming the record and the field.
bool int_field(const nlohmann::json& rec, const char* key, size_t index, int64_t* out,
               LedgerReport* r) {
  const auto it = rec.find(key);
  if (it == rec.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
    add_problem(r, record_name(index, rec) + ": no non-negative integer \"" + key + "\"");
    return false;
  }
  *out = it->get<int64_t>();
  return true;
}

// A commit's [lo, hi) pieces, each inside [0, M); a malformed one is a problem (the commit
// then counts as consuming nothing, so its micro-batches show up as missing too).
bool parse_pieces(const nlohmann::json& rec, size_t index, int64_t m, Pieces* out,
                  LedgerReport* r) {
  const auto it = rec.find("micro_batches");
  if (it == rec.end() || !it->is_array()) {
    add_problem(r, record_name(index, rec) + ": no \"micro_batches\" array");
    return false;
  }
  for (const auto& p : *it) {
    const bool pair =
        p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer();
    const int64_t lo = pair ? p[0].get<int64_t>() : 0, hi = pair ? p[1].get<int64_t>() : 0;
    if (!pair || lo < 0 || hi <= lo || hi > m) {
      add_problem(r, record_name(index, rec) + ": micro-batch piece " + p.dump() +
                         " is not [lo, hi) with 0 <= lo < hi <= " + std::to_string(m));
      return false;
    }
    out->emplace_back(lo, hi);
  }
  return true;
}

std::string range(int64_t a, int64_t b) {
  return a == b ? std::to_string(a) : std::to_string(a) + ".." + std::to_string(b);
}

// Problems of step s: runs of micro-batches consumed other than once.
void check_step(int64_t s, const std::vector<const Commit*>& commits, int64_t m, LedgerReport* r) {
  std::vector<int64_t> times(static_cast<size_t>(m), 0);
  for (const Commit* c : commits)
    for (const auto& [lo, hi] : c->pieces)
      for (int64_t i = lo; i < hi; ++i) ++times[size_t(i)];
  for (int64_t a = 0; a < m;) {
    int64_t b = a;
    while (b + 1 < m && times[size_t(b + 1)] == times[size_t(a)]) ++b;
    const int64_t t = times[size_t(a)];
    if (t != 1)
      add_problem(r, "step " + std::to_string(s) + (a == b ? " micro-batch " : " micro-batches ") +
                         range(a, b) + " (global " + range(s * m + a, s * m + b) +
                         "): " + (t == 0 ? "missing" : "consumed " + std::to_string(t) + " times"));
    a = b + 1;
  }
}

std::string plural(int64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

LedgerReport check_ledger(const std::vector<nlohmann::json>& records, int64_t micro_batches) {
  LedgerReport r;
  r.micro_batches = micro_batches;
  std::multimap<int64_t, Commit> live;  // step -> the surviving commits of that step
  for (size_t i = 0; i < records.size(); ++i) {
    const nlohmann::json& rec = records[i];
    const std::string kind = rec.is_object() ? rec.value("kind", "") : "";
    int64_t step = 0;
    if (kind == "commit") {
      Commit c{i, {}};
      if (!int_field(rec, "step", i, &step, &r)) continue;
      parse_pieces(rec, i, micro_batches, &c.pieces, &r);
      const auto same = live.find(step);
      if (same != live.end())
        add_problem(&r, "step " + std::to_string(step) + " committed again by record " +
                            std::to_string(i) + " after record " +
                            std::to_string(same->second.record) +
                            " with no resume or rollback between");
      live.emplace(step, std::move(c));
    } else if (kind == "resume" || kind == "rollback") {
      if (!int_field(rec, "step", i, &step, &r)) continue;
      ++(kind == "resume" ? r.resumes : r.rollbacks);
      const auto from = live.lower_bound(step);
      r.undone_commits += std::distance(from, live.end());
      live.erase(from, live.end());
    }
  }
  if (live.empty()) return r;
  r.last_step = live.rbegin()->first;
  for (int64_t s = 0; s <= r.last_step; ++s) {
    std::vector<const Commit*> commits;
    for (auto [a, b] = live.equal_range(s); a != b; ++a) commits.push_back(&a->second);
    check_step(s, commits, micro_batches, &r);
  }
  return r;
}

std::string LedgerReport::summary() const {
  const std::string events = plural(resumes, "resume", "resumes") + ", " +
                             plural(rollbacks, "rollback", "rollbacks") + ", " +
                             plural(undone_commits, "undone commit", "undone commits");
  if (!ok())
    return "ledger: " +
           plural(int64_t(problems.size()) + problems_left_off, "problem", "problems") +
           (last_step < 0 ? " and no step committed"
                          : " in steps 0.." + std::to_string(last_step)) +
           " (" + std::to_string(micro_batches) + " micro-batches per step); " + events;
  if (last_step < 0) return "ledger: no step committed yet; " + events;
  const int64_t steps = last_step + 1;
  return "ledger: steps 0.." + std::to_string(last_step) + " committed, " +
         std::to_string(steps * micro_batches) + " micro-batches (" + std::to_string(steps) +
         " x " + std::to_string(micro_batches) + "), each consumed once; " + events;
}

std::string ledger_line(const nlohmann::json& record) {
  return record.dump();
}

}  // namespace troupe::launch
