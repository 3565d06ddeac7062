// [data] source and the arithmetic keys (data/arithmetic.h): parsed, defaulted, and each bad
// value refused with the key named.
#include <gtest/gtest.h>

#include <string>

#include "config/config_parse.h"

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
