// The `troupe` command. Subcommands live one per file in launch/.
#include <cstdio>
#include <exception>
#include <string_view>

#include "kernels/cpu/isa.h"
#include "launch/commands.h"
#include "launch/node_heap.h"

int main(int argc, char** argv) {
  {  // before anything that -march=native compiled runs (as far as main can see to it)
    char missing[256];
    constexpr uint32_t built_for = troupe::kernels::isa_compiled_here();
    if (troupe::kernels::isa_missing(built_for, troupe::kernels::isa_of_this_cpu(), missing,
                                     sizeof missing) > 0) {
      std::fprintf(stderr,
                   "troupe: error: this binary uses %s (it was built with -march=native), "
                   "which this CPU lacks. Build troupe on this machine (make build), or on the "
                   "oldest CPU of the cluster.\n",
                   missing);
      return 2;
    }
  }
  // A node's heap in 2 MiB pages (launch/node_heap.h): before anything starts a thread.
  if (argc > 1 && std::string_view(argv[1]) == "node") troupe::launch::exec_with_node_heap(argv);
  CLI::App app{"troupe: an actor-based elastic training runtime for DeepSeek-V4-style models"};
  app.require_subcommand(1);
  troupe::launch::add_train_command(app);
  troupe::launch::add_export_command(app);
  troupe::launch::add_eval_command(app);
  troupe::launch::add_generate_command(app);
  troupe::launch::add_dev_command(app);
  troupe::launch::add_launch_command(app);
  troupe::launch::add_node_command(app);
  troupe::launch::add_ledger_command(app);
  troupe::launch::add_eplb_command(app);
  troupe::launch::add_control_commands(app);
  troupe::launch::add_report_command(app);
  troupe::launch::add_chaos_command(app);
  troupe::launch::add_engram_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "troupe: error: %s (run with --help for usage)\n", e.what());
    return 2;
  } catch (const troupe::launch::RunFailed& e) {
    std::fprintf(stderr, "troupe: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
