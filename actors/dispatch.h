// The runtime's one rule for bad input (runtime/dispatch.h: the dispatcher, the drop log;
// runtime/receipts.h: sets of senders per round) under their short names in actors/. The
// roles build theirs with the training protocol's type names (protocol.h type_name), so
// that a training message out of its phase is `wrong_phase`, not `unknown_type`.
#pragma once

#include "actors/protocol.h"
#include "runtime/dispatch.h"
#include "runtime/receipts.h"

namespace troupe::actors {

using runtime::add_name;
using runtime::Dispatcher;
using runtime::Drop;
using runtime::drop;
using runtime::drop_name;
using runtime::drop_reasons;
using runtime::drop_receipt;
using runtime::DropLog;
using runtime::Receipts;
using runtime::Rejected;
using runtime::Verdict;

}  // namespace troupe::actors
