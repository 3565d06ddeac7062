// `troupe eplb --loads F.json --replicas R --groups G --nodes N --gpus P`: expert placement
// offline (train/eplb.h), for operators planning a cluster. Reads {"loads": [[...], ...]}
// (layers × logical experts, token counts) and prints one JSON object: phy2log, log2phy,
// logcnt, the policy used, balance_before and balance_after.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launch/commands.h"
#include "train/eplb.h"

namespace troupe::launch {

namespace {

struct EplbArgs {
  std::string loads_path;
  model::EplbProblem problem;
  std::string policy = "improved";
};

// What a JSON value is, for an error message.
std::string kind_of(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "a number";
}

std::vector<std::vector<double>> loads_of(const nlohmann::json& doc, const std::string& path) {
  const std::string fix =
      ": give {\"loads\": [[tokens of expert 0, 1, ...], ...]}, a row per layer";
  if (!doc.is_object() || !doc.contains("loads"))
    throw UsageError("eplb: " + path + " has no \"loads\"" + fix);
  const nlohmann::json& rows = doc["loads"];
  if (!rows.is_array()) throw UsageError("eplb: loads in " + path + " is " + kind_of(rows) + fix);
  std::vector<std::vector<double>> out;
  for (size_t l = 0; l < rows.size(); ++l) {
    const std::string at = "eplb: loads[" + std::to_string(l) + "]";
    if (!rows[l].is_array()) throw UsageError(at + " in " + path + " is " + kind_of(rows[l]) + fix);
    std::vector<double>& row = out.emplace_back();
    for (size_t e = 0; e < rows[l].size(); ++e) {
      const nlohmann::json& v = rows[l][e];
      if (!v.is_number())
        throw UsageError(at + "[" + std::to_string(e) + "] in " + path + " is " + kind_of(v) +
                         ", not a number: a load is a token count");
      row.push_back(v.get<double>());
    }
  }
  return out;
}

std::vector<std::vector<double>> read_loads(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("eplb: cannot read --loads " + path + ": give an existing JSON file");
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  if (doc.is_discarded())
    throw UsageError("eplb: " + path + " is not valid JSON: give {\"loads\": [[...], ...]}");
  return loads_of(doc, path);
}

void run_eplb(EplbArgs& args) {
  args.problem.loads = read_loads(args.loads_path);
  const model::EplbPolicy policy =
      args.policy == "published" ? model::EplbPolicy::published : model::EplbPolicy::improved;
  model::EplbPlacement placement;
  try {
    placement = model::rebalance_experts(args.problem, policy);
  } catch (const std::invalid_argument& e) {
    throw UsageError("eplb: " + std::string(e.what()));
  }
  const std::string invalid = model::check_placement(args.problem, placement);
  if (!invalid.empty()) throw RunFailed("eplb: the placement is invalid (a bug): " + invalid);
  nlohmann::json out;
  out["policy"] = placement.hierarchical ? "hierarchical" : "global";
  out["phy2log"] = placement.phy2log;
  out["log2phy"] = placement.log2phy;
  out["logcnt"] = placement.logcnt;
  out["balance_before"] = model::static_balance(args.problem);
  out["balance_after"] = model::placement_balance(args.problem, placement);
  std::printf("%s\n", out.dump().c_str());
}

}  // namespace

void add_eplb_command(CLI::App& app) {
  auto args = std::make_shared<EplbArgs>();
  model::EplbProblem& p = args->problem;
  CLI::App* cmd = app.add_subcommand(
      "eplb",
      "place the replicas of each layer's experts on GPUs from their loads (DeepSeek's EPLB, "
      "hierarchical when groups % nodes == 0, else global; then improved). Prints one JSON "
      "object: phy2log, log2phy, logcnt, policy, balance_before (every expert once, in index "
      "order, in contiguous blocks over the GPUs) and balance_after; balance is the mean over "
      "layers of the heaviest GPU's load over the mean GPU load");
  cmd->add_option("--loads", args->loads_path,
                  "JSON file {\"loads\": [[...], ...]}: tokens per logical expert, a row per layer")
      ->required();
  cmd->add_option("--replicas", p.replicas, "R: physical expert slots per layer, >= experts")
      ->required()
      ->check(at_least(1, "a multiple of --gpus"));
  cmd->add_option("--groups", p.groups, "G: expert groups, dividing the experts")
      ->required()
      ->check(at_least(1, "dividing the experts"));
  cmd->add_option("--nodes", p.nodes, "N: server nodes, dividing --gpus")
      ->required()
      ->check(at_least(1, "dividing --gpus"));
  cmd->add_option("--gpus", p.gpus, "P: GPUs in all")->required()->check(at_least(1, "GPUs"));
  cmd->add_option("--policy", args->policy,
                  "improved (default: the published algorithm, then a search that keeps the "
                  "better per layer) or published (deepseek-ai/EPLB's eplb.py alone)")
      ->check(CLI::IsMember({"improved", "published"}));
  cmd->callback([args] { run_eplb(*args); });
}

}  // namespace troupe::launch
