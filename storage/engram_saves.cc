#include "storage/engram_saves.h"

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "storage/engram_set.h"

namespace troupe::storage {

namespace fs = std::filesystem;

namespace {

fs::path saved_root(const std::string& run_dir) {
  return fs::path(run_dir) / "engram" / "saved";
}

[[noreturn]] void fail(const std::string& what, const std::error_code& ec) {
  throw std::runtime_error(what + ": " + ec.message());
}

// Every version: the step directories (names that are not a step are left alone) and, in
// each, the names saved there.
std::map<int64_t, std::vector<std::string>> versions(const std::string& run_dir) {
  std::map<int64_t, std::vector<std::string>> out;
  std::error_code ec;
  const fs::path root = saved_root(run_dir);
  if (!fs::exists(root, ec)) return out;
  // Each walk its own error code: a later successful walk must not clear an earlier failure.
  for (const fs::directory_entry& d : fs::directory_iterator(root, ec)) {
    const std::string s = d.path().filename().string();
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) continue;
    std::vector<std::string>& names = out[std::stoll(s)];
    std::error_code step_ec;
    for (const fs::directory_entry& f : fs::directory_iterator(d.path(), step_ec))
      if (f.path().extension() == ".safetensors") names.push_back(f.path().stem().string());
    if (step_ec) fail("cannot list " + d.path().string(), step_ec);
  }
  if (ec) fail("cannot list " + root.string(), ec);
  return out;
}

void remove_file(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
  if (ec) fail("cannot remove " + p.string(), ec);
}

}  // namespace

std::string engram_saved_path(const std::string& run_dir, int64_t step, const std::string& name) {
  return (saved_root(run_dir) / std::to_string(step) / (name + ".safetensors")).string();
}

void publish_engram_save(const std::string& run_dir, int64_t step, const std::string& name) {
  const fs::path from = engram_saved_path(run_dir, step, name);
  const fs::path to = engram_set_path(run_dir, name);
  const fs::path tmp = to.string() + ".link";
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  if (ec) fail("cannot create " + to.parent_path().string(), ec);
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (ec) {  // no hard links here: a copy
    ec.clear();
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) fail("cannot copy " + from.string() + " to " + tmp.string(), ec);
  }
  fs::rename(tmp, to, ec);
  if (ec) fail("cannot rename " + tmp.string() + " to " + to.string(), ec);
}

void drop_engram_saves_from(const std::string& run_dir, int64_t from_step) {
  std::map<int64_t, std::vector<std::string>> all = versions(run_dir);
  std::set<std::string> unpublished;  // names whose sets/ file was a dropped version
  for (auto it = all.lower_bound(from_step); it != all.end(); it = all.erase(it)) {
    for (const std::string& name : it->second) {
      std::error_code ec;
      const fs::path v = engram_saved_path(run_dir, it->first, name);
      if (fs::equivalent(v, engram_set_path(run_dir, name), ec)) unpublished.insert(name);
    }
    std::error_code ec;
    const fs::path dir = saved_root(run_dir) / std::to_string(it->first);
    fs::remove_all(dir, ec);
    if (ec) fail("cannot remove " + dir.string(), ec);
  }
  for (const std::string& name : unpublished) {
    int64_t newest = -1;
    for (const auto& [step, names] : all)
      for (const std::string& n : names)
        if (n == name) newest = step;
    if (newest >= 0)
      publish_engram_save(run_dir, newest, name);
    else
      remove_file(engram_set_path(run_dir, name));
  }
}

int64_t prune_engram_saves(const std::string& run_dir, int64_t oldest_step) {
  const std::map<int64_t, std::vector<std::string>> all = versions(run_dir);
  std::map<std::string, int64_t> kept_before;  // name: its newest version before oldest_step
  for (auto it = all.begin(); it != all.lower_bound(oldest_step); ++it)
    for (const std::string& name : it->second) kept_before[name] = it->first;
  int64_t removed = 0;
  for (auto it = all.begin(); it != all.lower_bound(oldest_step); ++it) {
    for (const std::string& name : it->second)
      if (kept_before[name] != it->first)
        remove_file(engram_saved_path(run_dir, it->first, name)), ++removed;
    std::error_code ec;  // a step directory left empty goes too
    fs::remove(saved_root(run_dir) / std::to_string(it->first), ec);
  }
  return removed;
}

}  // namespace troupe::storage
