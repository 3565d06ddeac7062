#pragma once
// The transfer fault hook (chaos at the state-transfer seam): a worker corrupts the k-th
// StateTransfer or Replica it sends (one byte flipped on the wire, after its CRC32C was
// taken), so that tests see the receiver detect it and fetch it again. Read from the
// environment variable TROUPE_TRANSFER_FAULT, a comma-separated list of corrupt@K (K ≥ 1:
// the K-th transfer this worker sends, counting from its start). Empty or unset: none.
// Every node process inherits it from `troupe launch`.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>

namespace troupe::actors {

class TransferFaults {
 public:
  // Throws std::invalid_argument naming the bad item and the accepted form.
  static TransferFaults parse(const std::string& spec) {
    TransferFaults f;
    size_t at = 0;
    while (at < spec.size()) {
      const size_t end = std::min(spec.find(',', at), spec.size());
      const std::string item = spec.substr(at, end - at);
      at = end + 1;
      if (item.empty()) continue;
      size_t used = 0;
      long k = 0;
      try {
        if (item.rfind("corrupt@", 0) == 0) k = std::stol(item.substr(8), &used);
      } catch (const std::exception&) {
      }
      if (k < 1 || 8 + used != item.size())
        throw std::invalid_argument("TROUPE_TRANSFER_FAULT: '" + item +
                                    "' is not corrupt@K (K >= 1: the K-th transfer sent)");
      f.corrupt_.insert(k);
    }
    return f;
  }
  static TransferFaults from_env() {
    const char* spec = std::getenv("TROUPE_TRANSFER_FAULT");
    return spec ? parse(spec) : TransferFaults{};
  }
  // Counts one more transfer sent; whether it is to be corrupted.
  bool next_corrupt() { return corrupt_.count(++sent_) > 0; }

 private:
  std::set<int64_t> corrupt_;
  int64_t sent_ = 0;
};

}  // namespace troupe::actors
