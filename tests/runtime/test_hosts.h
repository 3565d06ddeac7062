// A node process's Host for tests: loopback, the given node id ("" : not joined yet) and
// job secret; the test fails where it cannot be made.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "runtime/host.h"

namespace troupe::runtime::test {

inline std::unique_ptr<Host> make_host(const std::string& node_id, const std::string& secret) {
  HostOptions o;
  o.node_id = node_id;
  o.secret = secret;
  auto h = Host::create(o);
  EXPECT_TRUE(h.ok()) << h.status().to_string();
  return std::move(h).value();
}

}  // namespace troupe::runtime::test
