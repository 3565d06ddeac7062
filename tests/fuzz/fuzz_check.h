// What a fuzz target asserts beyond "no crash": a property every input must keep (a
// round trip that gives back what went in, two decoders that agree). A broken one aborts
// with the condition and the place, which libFuzzer reports as a crash and keeps the input,
// and which the corpus replay (replay_main.cc) reports as a failed test.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                                  \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "%s:%d: fuzz property broken: %s (%s)\n", __FILE__, __LINE__, #cond, \
                   what);                                                                       \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)
