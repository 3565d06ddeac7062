#pragma once
// [data]: which corpus and how it is split and shuffled. Parsed by config/.
#include <cstdint>
#include <string>

namespace troupe::model {

struct DataConfig {                                      // [data]
  std::string corpus_dir = "/usr/share/games/fortunes";  // path: the fortunes files
  int64_t val_modulus = 20;   // a document is validation when xxh64(text,0) % val_modulus == 0
  int64_t val_rows_max = 64;  // rows of T evaluated at each validation (0 = all)
  bool shuffle = true;        // shuffle training documents, a new order each epoch
  bool operator==(const DataConfig&) const = default;
};

}  // namespace troupe::model
