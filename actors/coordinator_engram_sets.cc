// Engram table sets swapped between two steps (issue 16, docs/engram.md "Table sets"). The
// job starts on its own tables, the set "initial"; attaching a set saves the one attached
// now (a version of its own, storage/engram_saves.h, published in <run dir>/engram/sets/)
// and loads the new one; detaching saves the attached set and loads the version of the one
// under it that its attach saved, checked against that save's hash, so that detach and
// re-attach give back every bit.
// Ops come from --engram-at (after a given step count) and from the control endpoint; each
// is checked when asked (a set made for another model config is refused there, naming the
// key, and the job goes on), then runs at the next step boundary in two rounds: SAVE (worker
// 0 writes the attached set: the workers hold the same tables, or worker 0 fetches them from
// the shards) and LOAD (every worker and every Engram holder loads the next set). Nothing
// trains between the rounds. A view change sends the round in flight again to the new view;
// a LOAD that fails anywhere is undone by loading the saved set everywhere.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "actors/coordinator_state.h"
#include "runtime/log.h"
#include "storage/engram_saves.h"
#include "storage/engram_set.h"

namespace troupe::actors::coordinator_impl {

namespace {

std::string run_dir(Self* self) {
  return self->state.opt.job.run_dir;
}

std::vector<std::string> names(const std::vector<StackedSet>& stack) {
  std::vector<std::string> out;
  for (const StackedSet& x : stack) out.push_back(x.name);
  return out;
}

// The stack once every queued op has run.
std::vector<std::string> projected_stack(const EngramSets& e) {
  std::vector<std::string> stack = names(e.stack);
  for (const EngramOp& op : e.queue) {
    if (op.attach)
      stack.push_back(op.name);
    else
      stack.pop_back();
  }
  return stack;
}

std::string check_attach(Self* self, const EngramOp& op, const std::vector<std::string>& stack) {
  if (const std::string bad = storage::engram_set_name_error(op.name); !bad.empty())
    return "engram attach: " + bad;
  if (std::find(stack.begin(), stack.end(), op.name) != stack.end())
    return fmt::format("engram attach: table set '{}' is {}; detach first", op.name,
                       stack.back() == op.name ? "attached already" : "under the attached one");
  const std::string path =
      op.path.empty() ? storage::engram_set_path(run_dir(self), op.name) : op.path;
  if (op.path.empty() && !std::filesystem::exists(path))
    return fmt::format("engram attach: no table set '{}' kept in this job ({}); give its \"path\"",
                       op.name, path);
  const model::JobConfig& cfg = self->state.opt.config;
  try {  // its header, checked now: a bad one is refused while the job goes on (a LOAD that
         // fails on its data later is undone everywhere)
    (void)storage::check_engram_set(path, cfg.model, cfg.train.seed);
  } catch (const std::exception& e) {
    return std::string("engram attach: ") + e.what();
  }
  return "";
}

const std::string& addressee(const EngramSets& e) {
  return e.queue.front().attach ? e.queue.front().name : e.stack.back().name;
}

// Where the LOAD round reads: the set attached, or (detach) the version of the one under the
// attached set that the attach saved, or (undoing a failed LOAD) the set just saved.
std::string load_path(Self* self) {
  const EngramSets& e = self->state.engram_sets;
  const EngramOp& op = e.queue.front();
  if (e.undoing)
    return storage::engram_saved_path(run_dir(self), committed_version(self), e.stack.back().name);
  if (!op.attach) {
    const StackedSet& under = e.stack[e.stack.size() - 2];
    return storage::engram_saved_path(run_dir(self), under.saved_step, under.name);
  }
  return op.path.empty() ? storage::engram_set_path(run_dir(self), op.name) : op.path;
}

// The tables a LOAD must give: those saved (a detach's, an undo's); none for an attach.
std::optional<uint64_t> load_hash(const EngramSets& e) {
  if (e.undoing) return e.saved_hash;
  if (!e.queue.front().attach) return e.stack[e.stack.size() - 2].saved_hash;
  return std::nullopt;
}

void send_round(Self* self) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  train::EngramSwap w;
  w.set_version(committed_version(self));
  w.set_op(e.op);
  w.set_round(e.round);
  std::vector<std::string> to;
  if (e.round == train::EngramSwap::SAVE) {
    w.set_path(
        storage::engram_saved_path(run_dir(self), committed_version(self), e.stack.back().name));
    w.set_name(e.stack.back().name);
    name_engram_shards(self, w.mutable_engram_shards());
    to = {s.core.workers.front()};
  } else {
    w.set_path(load_path(self));
    w.set_name(e.undoing ? e.stack.back().name : addressee(e));
    to = s.core.workers;
    if (engram_sharded(self)) to.insert(to.end(), s.engram.flat.begin(), s.engram.flat.end());
  }
  e.waiting = {to.begin(), to.end()};
  e.sent = true;
  for (const std::string& a : to) {
    ActorMessage m = make_message(s.self_address, a, engram_swap_type, w);
    m.epoch = s.core.epoch;
    self->send(s.router, std::move(m));
  }
}

std::string hex(uint64_t h) {
  return fmt::format("{:016x}", h);
}

// The op is done (or given up): the next op or the next step.
void next(Self* self) {
  EngramSets& e = self->state.engram_sets;
  e.queue.pop_front();
  e.started = e.sent = e.undoing = false;
  e.failed.clear();
  e.waiting.clear();
  start_or_finish(self);
}

// The saved versions no resume or rollback can need any more (prune_engram_saves): the
// oldest step the job can go back to is its oldest kept checkpoint's.
void prune(Self* self) {
  const std::vector<int64_t> kept = self->state.commit_log->checkpoints();
  const int64_t oldest =
      kept.empty() ? committed_version(self) : *std::min_element(kept.begin(), kept.end());
  try {
    storage::prune_engram_saves(run_dir(self), oldest);
  } catch (const std::exception& x) {  // a version left behind costs disk, not bits
    log::warn("{}: {}", self->state.self_address, x.what());
  }
}

void loaded(Self* self) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  const EngramOp op = e.queue.front();
  const int64_t step = committed_version(self);
  if (!e.failed.empty()) {
    event(self, "engram_swap_failed",
          fmt::format("before step {}: {} '{}' failed ({}); every node is back on '{}'", step + 1,
                      op.attach ? "attaching" : "detaching", addressee(e), e.failed,
                      e.stack.back().name),
          {{"step", step}, {"name", addressee(e)}, {"reason", e.failed}});
    return next(self);
  }
  const std::string saved = e.stack.back().name;
  if (op.attach)
    push_engram_set(&e.stack, op.name, step, e.saved_hash);
  else
    pop_engram_set(&e.stack);
  const nlohmann::json fields = {{"step", step},
                                 {"name", op.attach ? op.name : saved},
                                 {"saved", saved},
                                 {"saved_hash", hex(e.saved_hash)},
                                 {"loaded", e.stack.back().name},
                                 {"loaded_hash", hex(e.loaded_hash)}};
  e.done.push_back({step, op.attach, op.attach ? op.name : saved, e.saved_hash});
  nlohmann::json record = fields;
  record["kind"] = op.attach ? "engram_attach" : "engram_detach";
  (void)s.commit_log->record(record);
  event(self, op.attach ? "engram_attached" : "engram_detached",
        fmt::format("before step {}: table set '{}' {} (tables {}); '{}' kept in the run "
                    "directory (tables {})",
                    step + 1, op.attach ? op.name : e.stack.back().name,
                    op.attach ? "attached" : "back, after detaching " + saved, hex(e.loaded_hash),
                    saved, hex(e.saved_hash)),
        fields);
  prune(self);
  next(self);
}

// A LOAD's tables: "" when they are those it must give (load_hash), else why not.
std::string wrong_tables(const EngramSets& e, uint64_t got) {
  const std::optional<uint64_t> want = load_hash(e);
  if (!want || *want == got) return "";
  return fmt::format("it loaded tables {}, not the {} saved", hex(got), hex(*want));
}

Verdict save_failed(Self* self, const std::string& why) {
  const std::string& name = self->state.engram_sets.stack.back().name;
  event(self, "engram_swap_failed",
        fmt::format("table set '{}' could not be saved ({}): nothing changed", name, why),
        {{"name", name}, {"reason", why}});
  next(self);
  return {};
}

}  // namespace

std::string ask_engram_op(Self* self, const EngramOp& op) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  if (s.opt.config.model.engram_layers.empty())
    return "engram: this model has no Engram layer, so no table set to attach or detach";
  if (run_dir(self).empty())
    return "engram: table sets are kept in the run directory, and this job has none (--run-dir)";
  const std::vector<std::string> stack = projected_stack(e);
  if (!op.attach && stack.size() < 2)
    return "engram detach: no table set is attached (the job runs on its initial tables)";
  if (op.attach)
    if (std::string why = check_attach(self, op, stack); !why.empty()) return why;
  e.queue.push_back(op);
  event(self, op.attach ? "engram_attach_requested" : "engram_detach_requested",
        op.attach
            ? fmt::format("table set '{}' is attached at the next step boundary", op.name)
            : fmt::format("table set '{}' is detached at the next step boundary", stack.back()),
        {{"name", op.attach ? op.name : stack.back()}});
  return "";
}

bool engram_swap_due(Self* self) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  if (auto it = s.opt.engram_at.find(s.drv.step); it != s.opt.engram_at.end()) {
    for (const EngramOp& op : it->second)
      if (const std::string why = ask_engram_op(self, op); !why.empty())
        event(self, "engram_swap_failed", fmt::format("--engram-at {}: {}", it->first, why),
              {{"step", it->first}, {"reason", why}});
    e.fired[it->first] = it->second;
    s.opt.engram_at.erase(it);
  }
  if (e.queue.empty()) return false;
  if (!e.started) {
    e.started = true;
    ++e.op;
    e.round = train::EngramSwap::SAVE;
  }
  if (!e.sent) send_round(self);
  return true;
}

void abandon_engram_round(Self* self) {
  EngramSets& e = self->state.engram_sets;
  e.sent = false;
  e.waiting.clear();
}

void rewind_engram_sets(Self* self, int64_t step) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  std::erase_if(e.done, [&](const EngramSets::Done& d) { return d.step >= step; });
  e.stack = e.base;
  for (const EngramSets::Done& d : e.done)
    if (d.attach)
      push_engram_set(&e.stack, d.name, d.step, d.saved_hash);
    else
      pop_engram_set(&e.stack);
  try {  // the sets saved from `step` on were of a future that is gone
    storage::drop_engram_saves_from(run_dir(self), step);
  } catch (const std::exception& x) {
    log::warn("{}: {}", s.self_address, x.what());
  }
  for (auto it = e.fired.lower_bound(step); it != e.fired.end(); it = e.fired.erase(it))
    s.opt.engram_at[it->first] = it->second;
  if (!e.queue.empty())
    event(self, "engram_swap_failed",
          fmt::format("the rollback to step {} dropped {} table set op(s) not yet done; those of "
                      "--engram-at run again at their steps, others must be asked again",
                      step, e.queue.size()),
          {{"step", step}, {"reason", "rollback"}});
  e.queue.clear();
  e.started = e.sent = e.undoing = false;
  e.failed.clear();
  e.waiting.clear();
}

Verdict on_engram_swapped(Self* self, const train::EngramSwapped& w, const ActorMessage& m) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  if (w.checkpoint()) return drop(Drop::duplicate, "a rollback's load confirmed again");
  if (e.queue.empty() || !e.sent || w.op() != e.op || w.round() != e.round)
    return drop(Drop::wrong_step, fmt::format("EngramSwapped of op {}", w.op()));
  if (!e.waiting.erase(m.from)) return drop(Drop::duplicate, "an EngramSwapped not waited for");
  const bool save = e.round == train::EngramSwap::SAVE;
  const std::string why = w.ok() ? (save ? "" : wrong_tables(e, w.tables_hash())) : w.error();
  if (!why.empty() && save) return save_failed(self, why);
  if (!why.empty() && e.undoing) {
    fail(self, fmt::format("{} could not load table set '{}' back ({}): the nodes' Engram "
                           "tables differ",
                           m.from, e.stack.back().name, why));
    return {};
  }
  if (!why.empty() && e.failed.empty()) e.failed = fmt::format("{}: {}", m.from, why);
  (save ? e.saved_hash : e.loaded_hash) = w.tables_hash();
  if (!e.waiting.empty()) return {};
  e.sent = false;
  if (save) {
    try {  // the newest copy of the name, what an attach by name reads
      storage::publish_engram_save(run_dir(self), committed_version(self), e.stack.back().name);
    } catch (const std::exception& x) {
      return save_failed(self, x.what());
    }
    e.round = train::EngramSwap::LOAD;
    send_round(self);
  } else if (!e.failed.empty() && !e.undoing) {
    e.undoing = true;  // a LOAD failed somewhere: the saved set back everywhere
    send_round(self);
  } else {
    loaded(self);
  }
  return {};
}

nlohmann::json engram_sets_status(Self* self) {
  const EngramSets& e = self->state.engram_sets;
  return {{"attached", e.stack.back().name}, {"stack", names(e.stack)}, {"queued", e.queue.size()}};
}

}  // namespace troupe::actors::coordinator_impl
