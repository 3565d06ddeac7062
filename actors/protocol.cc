#include "actors/protocol.h"

namespace troupe::actors {

bool unflatten_counts(const google::protobuf::RepeatedField<int64_t>& layers,
                      const runtime::Payload& payload, std::vector<std::vector<int64_t>>* out) {
  std::vector<int64_t> flat;
  if (!read_payload(payload, &flat)) return false;
  size_t at = 0;
  out->assign(size_t(layers.size()), {});
  for (int l = 0; l < layers.size(); ++l) {
    if (layers[l] < 0 || size_t(layers[l]) > flat.size() - at) return false;
    (*out)[size_t(l)].assign(flat.begin() + int64_t(at), flat.begin() + int64_t(at) + layers[l]);
    at += size_t(layers[l]);
  }
  return at == flat.size();
}

}  // namespace troupe::actors
