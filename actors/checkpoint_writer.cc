#include "actors/checkpoint_writer.h"

#include "storage/checkpoint.h"
#include "storage/shard_store.h"

namespace troupe::actors {

void write_and_report(const std::vector<model::StateTensor>& snap, const std::string& dir,
                      const std::string& writer, train::CheckpointWritten w,
                      runtime::ActorMessage m, caf::actor router,
                      const storage::StorageFaults& faults) {
  storage::lower_this_thread_priority();
  auto written = storage::write_shards(dir, writer, w.step(), storage::shard_views(snap), faults);
  w.set_ok(written.ok());
  if (!written.ok()) w.set_error(written.status().message());
  train::ShardList list;
  if (written.ok())
    for (const storage::ShardRecord& r : written.value()) {
      train::ShardEntry* e = list.add_shards();
      e->set_name(r.name), e->set_writer(r.writer), e->set_crc32c(r.crc32c);
      e->set_bytes(r.bytes);
    }
  m.header = w.SerializeAsString();
  if (written.ok()) m.payloads.push_back(runtime::text_payload(list.SerializeAsString()));
  caf::anon_send(router, std::move(m));
}

}  // namespace troupe::actors
