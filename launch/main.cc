// The `troupe` command. Subcommands live one per file in launch/.
#include <cstdio>
#include <exception>

#include "launch/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"troupe: an actor-based elastic training runtime for DeepSeek-V4-style models"};
  app.require_subcommand(1);
  troupe::launch::add_train_command(app);
  troupe::launch::add_export_command(app);
  troupe::launch::add_eval_command(app);
  troupe::launch::add_dev_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
