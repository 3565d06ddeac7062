// [grpo] (troupe train's GRPO phase, docs/grpo.md) and its task's keys, [data] source and
// arith_* (data/arithmetic.h): parsed, defaulted as SPEC-model.md §7 says, handed to the
// runner unchanged, and each bad value refused with the key named.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config_parse.h"
#include "train/grpo.h"

namespace troupe::model {
namespace {

std::string error_of(const std::vector<std::string>& sets) {
  try {
    config_from_sets(sets);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

// What a GRPO job on the arithmetic task needs besides [grpo]: no Engram (refused by the runner).
const std::vector<std::string> kNoEngram = {"model.engram_layers=[]"};

std::vector<std::string> with(std::vector<std::string> sets) {
  sets.insert(sets.begin(), kNoEngram.begin(), kNoEngram.end());
  return sets;
}

TEST(GrpoConfigSection, DefaultsAreSpecSection7) {
  const GrpoJobConfig g = JobConfig{}.grpo;
  EXPECT_FALSE(g.enabled);
  EXPECT_EQ(g.group_size, 8);
  EXPECT_EQ(g.max_new_tokens, 16);
  EXPECT_EQ(g.temperature, 1.0);
  EXPECT_EQ(g.clip_eps, 0.2);
  EXPECT_EQ(g.kl_beta, 0.04);
  EXPECT_EQ(g.init_weights, "");
}

TEST(GrpoConfigSection, ParsedAndHandedToTheRunner) {
  const JobConfig c =
      config_from_sets(with({"grpo.enabled=true", "grpo.prompts_per_step=3", "grpo.group_size=4",
                             "grpo.max_new_tokens=5", "grpo.temperature=0.7", "grpo.clip_eps=0.1",
                             "grpo.kl_beta=0", "grpo.init_weights=runs/a/weights.safetensors"}));
  EXPECT_TRUE(c.grpo.enabled);
  EXPECT_EQ(c.grpo.init_weights, "runs/a/weights.safetensors");
  const GrpoConfig g = grpo_runner_config(c);
  EXPECT_EQ(g.prompts_per_step, 3);
  EXPECT_EQ(g.group_size, 4);
  EXPECT_EQ(g.max_new_tokens, 5);
  EXPECT_EQ(g.temperature, 0.7);
  EXPECT_EQ(g.loss.clip_eps, 0.1);
  EXPECT_EQ(g.loss.kl_beta, 0.0);
  // config_to_toml writes the section, and reading it back gives the same settings.
  const JobConfig back = config_from_text(config_to_toml(c), "back.toml", {});
  EXPECT_TRUE(back.same_settings(c));
  EXPECT_FALSE(c.same_settings(config_from_sets(kNoEngram)));
}

TEST(GrpoConfigSection, EachBadValueNamesItsKey) {
  EXPECT_CONTAINS(error_of({"grpo.group_size=1"}), "must be 2 or more");
  EXPECT_CONTAINS(error_of({"grpo.prompts_per_step=0"}), "--set grpo.prompts_per_step=0");
  EXPECT_CONTAINS(error_of({"grpo.max_new_tokens=-1"}), "must be a positive integer");
  EXPECT_CONTAINS(error_of({"grpo.temperature=0"}), "must be a positive number");
  EXPECT_CONTAINS(error_of({"grpo.clip_eps=1.5"}), "must be in (0, 1)");
  EXPECT_CONTAINS(error_of({"grpo.kl_beta=-0.1"}), "must be a non-negative number");
  EXPECT_CONTAINS(error_of({"grpo.enabled=1"}), "must be true or false");
  EXPECT_CONTAINS(error_of({"grpo.groupsize=8"}), "did you mean 'group_size'?");
  EXPECT_CONTAINS(error_of({"grpo.group=8"}), "known keys: enabled, prompts_per_step");
  // Ranges hold whether or not GRPO runs; the rules across sections only when it does.
  EXPECT_EQ(error_of({"grpo.max_new_tokens=500"}), "");
  EXPECT_CONTAINS(error_of(with({"grpo.enabled=true", "grpo.max_new_tokens=500"})),
                  "exceed model.seq_len = 128");
  EXPECT_CONTAINS(error_of({"grpo.enabled=true"}), "model.engram_layers must be empty");
  EXPECT_EQ(error_of(with({"grpo.enabled=true"})), "");
}

TEST(DataSource, ParsesAndDefaults) {
  EXPECT_EQ(JobConfig{}.data.source, DataSource::fortunes);
  const JobConfig c = config_from_sets({"data.source=\"arithmetic\"", "data.arith_max_operand=99",
                                        "data.arith_ops=\"+\"", "data.arith_documents=500"});
  EXPECT_EQ(c.data.source, DataSource::arithmetic);
  EXPECT_EQ(c.data.arith_max_operand, 99);
  EXPECT_EQ(c.data.arith_ops, "+");
  EXPECT_EQ(c.data.arith_documents, 500);
  // config_to_toml writes the keys, and reading them back gives the same settings.
  const std::string text = config_to_toml(c);
  EXPECT_NE(text.find("source = \"arithmetic\""), std::string::npos) << text;
  EXPECT_TRUE(config_from_text(text, "back.toml", {}).same_settings(c));
}

TEST(DataSource, BadValuesAreNamed) {
  const std::string unknown = error_of({"data.source=\"arith\""});
  EXPECT_NE(unknown.find("arith"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("fortunes, arithmetic"), std::string::npos) << unknown;
  const std::string ops = error_of({"data.arith_ops=\"+-\""});
  EXPECT_NE(ops.find("data.arith_ops"), std::string::npos) << ops;
  EXPECT_NE(error_of({"data.arith_ops=\"\""}).find("data.arith_ops"), std::string::npos);
  const std::string range = error_of({"data.arith_max_operand=1000001"});
  EXPECT_NE(range.find("data.arith_max_operand"), std::string::npos) << range;
  EXPECT_NE(error_of({"data.arith_documents=0"}).find("data.arith_documents"), std::string::npos);
}

}  // namespace
}  // namespace troupe::model
