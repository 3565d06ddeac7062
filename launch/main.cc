// The `troupe` command. Subcommands are registered here; each lives in its own file.
#include <cstdio>

int main() {
  std::puts("troupe: under construction");
  return 0;
}
