// Engram table sets swapped between two steps (issue 16, docs/engram.md "Table sets"). The
// job starts on its own tables, the set "initial"; attaching a set saves the one attached
// now under its name in <run dir>/engram/sets/ and loads the new one; detaching saves the
// attached set and loads the one under it, so that detach and re-attach give back every bit.
// Ops come from --engram-at (after a given step count) and from the control endpoint; each
// is checked when asked (a set made for another model config is refused there, naming the
// key, and the job goes on), then runs at the next step boundary in two rounds: SAVE (worker
// 0 writes the attached set: the workers hold the same tables, or worker 0 fetches them from
// the shards) and LOAD (every worker and every Engram holder loads the next set). Nothing
// trains between the rounds. A view change sends the round in flight again to the new view;
// a LOAD that fails anywhere is undone by loading the saved set everywhere.
#include <fmt/format.h>

#include <filesystem>

#include "actors/coordinator_state.h"
#include "storage/engram_set.h"

namespace troupe::actors::coordinator_impl {

namespace {

std::string run_dir(Self* self) {
  return self->state.opt.job.run_dir;
}

// The stack once every queued op has run.
std::vector<std::string> projected_stack(const EngramSets& e) {
  std::vector<std::string> stack = e.stack;
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
  return e.queue.front().attach ? e.queue.front().name : e.stack.back();
}

// Where the LOAD round reads: the set attached, or (detach) the one under the attached set,
// or (undoing a failed LOAD) the set just saved.
std::string load_path(Self* self) {
  const EngramSets& e = self->state.engram_sets;
  const EngramOp& op = e.queue.front();
  if (e.undoing) return storage::engram_set_path(run_dir(self), e.stack.back());
  if (!op.attach) return storage::engram_set_path(run_dir(self), e.stack[e.stack.size() - 2]);
  return op.path.empty() ? storage::engram_set_path(run_dir(self), op.name) : op.path;
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
    w.set_path(storage::engram_set_path(run_dir(self), e.stack.back()));
    w.set_name(e.stack.back());
    name_engram_shards(self, w.mutable_engram_shards());
    to = {s.core.workers.front()};
  } else {
    w.set_path(load_path(self));
    w.set_name(e.undoing ? e.stack.back() : addressee(e));
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

void loaded(Self* self) {
  auto& s = self->state;
  EngramSets& e = s.engram_sets;
  const EngramOp op = e.queue.front();
  const int64_t step = committed_version(self);
  if (!e.failed.empty()) {
    event(
        self, "engram_swap_failed",
        fmt::format("before step {}: {} '{}' failed ({}); every node is back on '{}'", step + 1,
                    op.attach ? "attaching" : "detaching", addressee(e), e.failed, e.stack.back()),
        {{"step", step}, {"name", addressee(e)}, {"reason", e.failed}});
    return next(self);
  }
  const std::string saved = e.stack.back();
  if (op.attach)
    e.stack.push_back(op.name);
  else
    e.stack.pop_back();
  const nlohmann::json fields = {{"step", step},
                                 {"name", op.attach ? op.name : saved},
                                 {"saved", saved},
                                 {"saved_hash", hex(e.saved_hash)},
                                 {"loaded", e.stack.back()},
                                 {"loaded_hash", hex(e.loaded_hash)}};
  e.done.push_back({step, op.attach, op.attach ? op.name : saved});
  nlohmann::json record = fields;
  record["kind"] = op.attach ? "engram_attach" : "engram_detach";
  (void)s.commit_log->record(record);
  event(self, op.attach ? "engram_attached" : "engram_detached",
        fmt::format("before step {}: table set '{}' {} (tables {}); '{}' kept in the run "
                    "directory (tables {})",
                    step + 1, op.attach ? op.name : e.stack.back(),
                    op.attach ? "attached" : "back, after detaching " + saved, hex(e.loaded_hash),
                    saved, hex(e.saved_hash)),
        fields);
  next(self);
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
      e.stack.push_back(d.name);
    else if (e.stack.size() > 1)
      e.stack.pop_back();
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
  if (!w.ok() && save) {
    event(self, "engram_swap_failed",
          fmt::format("table set '{}' could not be saved ({}): nothing changed", e.stack.back(),
                      w.error()),
          {{"name", e.stack.back()}, {"reason", w.error()}});
    next(self);
    return {};
  }
  if (!w.ok() && e.undoing) {
    fail(self, fmt::format("{} could not load table set '{}' back ({}): the nodes' Engram "
                           "tables differ",
                           m.from, e.stack.back(), w.error()));
    return {};
  }
  if (!w.ok() && e.failed.empty()) e.failed = fmt::format("{}: {}", m.from, w.error());
  (save ? e.saved_hash : e.loaded_hash) = w.tables_hash();
  if (!e.waiting.empty()) return {};
  e.sent = false;
  if (save) {
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
  return {{"attached", e.stack.back()}, {"stack", e.stack}, {"queued", e.queue.size()}};
}

}  // namespace troupe::actors::coordinator_impl
