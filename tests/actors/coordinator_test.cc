// The coordinator in scripted conversations (switchboard.h): the test plays the workers and
// the nodes, message by message, on CAF's virtual clock, and checks what the coordinator
// says and to whom. A duplicate changes nothing; Apply waits for every owner's norm; a node
// lost between Apply and StepDone sends the survivors back to the committed version; a
// second loss restarts the recovery; malformed messages of every type are dropped and
// counted while the job goes on; a throw ends the job through on_done; silence past the
// heartbeat timeout is noticed on virtual time, and the silent node is evicted with the
// epoch; a refused connection is an event; a step stalled by a lost message is redone after
// step_timeout_ms with every node, and one that keeps stalling ends the job.
#include <gtest/gtest.h>

#include "coordinator_script.h"

namespace troupe::actors::testing {
namespace {

TEST_F(CoordinatorScript, StartsWhenEveryWorkerIsReady) {
  EXPECT_EQ(count_sent(runtime::welcome_type), 3u);
  EXPECT_EQ(count_sent(step_begin_type), 3u);  // step 0 to each worker
  ready(1);                                    // a second Ready: dropped
  EXPECT_EQ(count_sent(step_begin_type), 3u);
}

TEST_F(CoordinatorScript, ADuplicatedNormPartsSendsNoSecondApplyAndNoneEarly) {
  for (int64_t i = 0; i < 3; ++i) stats(i, 0);
  norms(0, 0);
  norms(0, 0);  // a duplicate: counted once
  norms(1, 0);
  EXPECT_EQ(count_sent(apply_type), 0u) << "Apply before worker 2's norm";
  norms(2, 0);
  EXPECT_EQ(count_sent(apply_type), 3u);  // one to each worker
  norms(2, 0);
  norms(1, 0);
  EXPECT_EQ(count_sent(apply_type), 3u);
  EXPECT_EQ(count_events("dropped"), 1u);  // logged once per reason
}

TEST_F(CoordinatorScript, TheCommitIsRecordedThenAnnounced) {
  step(0);
  ASSERT_EQ(log->commits.size(), 1u);
  EXPECT_EQ(log->commits[0].step, 0);
  EXPECT_EQ(log->sent_when_recorded, (std::vector<size_t>{0}));
  EXPECT_EQ(count_sent(commit_type), 3u);
  EXPECT_EQ(count_sent(step_begin_type), 6u);  // then step 1
}

TEST_F(CoordinatorScript, ACommitThatCannotBeRecordedIsNeverAnnounced) {
  log->refuse = true;
  step(0);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("cannot record the commit of step 0"), std::string::npos);
  EXPECT_EQ(count_sent(commit_type), 0u);
}

TEST_F(CoordinatorScript, ADuplicateOfEveryTypeChangesNothing) {
  for (int64_t s = 0; s < 2; ++s) {
    for (int64_t i = 0; i < 3; ++i) stats(i, s), stats(i, s), norms(i, s), norms(i, s);
    for (int64_t i = 0; i < 3; ++i) done(i, s), done(i, s);
    ready(0);  // a replay from the start
  }
  for (int64_t i = 0; i < 3; ++i) val(i, 1), val(i, 1);  // the last step's validation
  EXPECT_EQ(count_sent(apply_type), 6u);
  EXPECT_EQ(count_sent(commit_type), 6u);
  EXPECT_EQ(log->commits.size(), 2u);
  for (int64_t i = 0; i < 3; ++i) send_final(i), send_final(i);
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->steps_done, 2);
  // Per step: 3 Stats, 3 NormParts, 2 StepDone (3 after the last step: the validation
  // keeps its round open); 2 validation Stats; 2 Finals; 3 reported in the workers' Finals.
  EXPECT_EQ(dropped("duplicate"), 8u + 9u + 2u + 2u + 3u);
  // The last StepDone's copy after step 0 is of another step; the replayed Readys come from
  // no standby worker (a running job takes Ready only from newcomers); the last validation
  // Stats' copy once the job is finishing is out of phase.
  EXPECT_EQ(dropped("wrong_step"), 1u);
  EXPECT_EQ(dropped("unknown_sender"), 2u);
  EXPECT_EQ(dropped("wrong_phase"), 1u);
}

TEST_F(CoordinatorScript, ANodeLostBetweenApplyAndStepDoneGoesBackToTheCommit) {
  step(0);
  for (int64_t i = 0; i < 3; ++i) stats(i, 1), norms(i, 1);
  ASSERT_EQ(count_sent(apply_type), 6u);
  done(0, 1);
  const uint64_t before = net->epoch;
  const std::string late = live[1];
  lose("n2");
  EXPECT_GT(net->epoch, before);
  const auto recovers = net->of_type(recover_type);
  ASSERT_EQ(recovers.size(), 2u);  // to the two survivors
  train::Recover r;
  ASSERT_TRUE(r.ParseFromString(recovers[0].header));
  EXPECT_EQ(r.version(), 1);  // step 0 committed, step 1 not
  EXPECT_EQ(r.workers_size(), 2);
  EXPECT_EQ(r.old_index(1), 2);
  // The lost worker's StepDone, sent before the view changed, arrives late: stale.
  train::StepDone d;
  d.set_step(1), d.set_worker(1);
  ActorMessage m = make_message(late, "", step_done_type, d);
  m.epoch = before;
  to_coordinator(m);
  EXPECT_EQ(log->commits.size(), 1u);
  recovered(0);
  recovered(1);
  EXPECT_EQ(count_sent(step_begin_type), 3u + 3u + 2u);  // step 1 again, on two workers
  step(1);
  EXPECT_EQ(log->commits.size(), 2u);
  EXPECT_EQ(log->commits[1].workers, 2);
}

TEST_F(CoordinatorScript, ARecoveryThatRestartsWithoutBothNodes) {
  for (int64_t i = 0; i < 3; ++i) stats(i, 0), norms(i, 0);
  lose("n2");
  recovered(0);  // the first survivor is done; then the other node goes too
  const uint64_t first = net->epoch;
  lose("n3");
  EXPECT_GT(net->epoch, first);
  ASSERT_EQ(count_events("recover"), 2u);
  EXPECT_NE(events.back().second.find("restarted"), std::string::npos) << events.back().second;
  const auto recovers = net->of_type(recover_type);
  train::Recover r;
  ASSERT_TRUE(r.ParseFromString(recovers.back().header));
  EXPECT_EQ(r.old_workers(), 3);  // from the same view as the first attempt
  EXPECT_EQ(r.version(), 0);
  ActorMessage old = make_message(live[0], "", recovered_type, train::Recovered{});
  old.epoch = first;  // the first attempt's answer: stale
  to_coordinator(old);
  EXPECT_EQ(count_sent(step_begin_type), 3u);
  recovered(0);
  EXPECT_EQ(count_sent(step_begin_type), 4u);
  step(0);
  EXPECT_EQ(log->commits.size(), 1u);
}

TEST_F(CoordinatorScript, AMalformedMessageOfEveryTypeIsDroppedAndCounted) {
  const std::vector<uint32_t> types = {runtime::join_type,
                                       runtime::heartbeat_type,
                                       runtime::node_error_type,
                                       ready_type,
                                       stats_type,
                                       norm_parts_type,
                                       step_done_type,
                                       recovered_type,
                                       final_type,
                                       apply_type,
                                       commit_type,
                                       9999};
  for (uint32_t t : types) {
    ActorMessage m;
    m.from = live[0], m.type = t, m.header = "\xff\xff\xff\xff";
    to_coordinator(m);
  }
  // Decodes, but does not fit: pieces of another worker's range, no payload, a stranger.
  train::Stats st;
  st.set_step(0), st.set_worker(0);
  st.add_pieces()->mutable_node()->set_hi(1);
  from(0, stats_type, st, {owned_payload(std::vector<int64_t>{})});
  train::NormParts np;
  np.set_worker(0);
  from(0, norm_parts_type, np);
  train::StepDone d;
  d.set_worker(2);
  from(0, step_done_type, d);
  step(0);
  step(1);
  for (int64_t i = 0; i < 3; ++i) send_final(i);
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok) << result->error;
  // Join, Heartbeat, NodeError, Stats, NormParts, StepDone, Ready (taken from newcomers while
  // the steps run) do not decode; Recovered, Final, Apply and Commit are not taken while the
  // steps run (nor decoded).
  EXPECT_EQ(dropped("undecodable"), 7u);
  EXPECT_EQ(dropped("wrong_phase"), 4u);
  EXPECT_EQ(dropped("unknown_type"), 1u);
  EXPECT_EQ(dropped("malformed"), 2u);
  EXPECT_EQ(dropped("unknown_sender"), 1u);
}

TEST_F(CoordinatorScript, AThrowEndsTheJobWithTheError) {
  on_step = [](const StepReport&) { throw std::runtime_error("a bug in a callback"); };
  step(0);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("a bug in a callback"), std::string::npos) << result->error;
  EXPECT_EQ(count_sent(runtime::shutdown_type), 3u);  // every node told to stop
}

TEST_F(CoordinatorScript, AThrowWhileReportingAThrowStillEndsTheJob) {
  on_step = [](const StepReport&) { throw std::runtime_error("first"); };
  bool thrown = false;
  on_event_hook = [&](const std::string& kind) {
    if (kind == "job_failed" && !std::exchange(thrown, true)) throw std::runtime_error("second");
  };
  step(0);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("first"), std::string::npos) << result->error;
}

TEST_F(CoordinatorScript, SilenceIsNoticedOnTheVirtualClock) {
  const auto& ft = config.fault_tolerance;
  for (int64_t t = ft.heartbeat_interval_ms; t <= ft.heartbeat_timeout_ms;
       t += ft.heartbeat_interval_ms) {
    for (const char* node : {"n1/agent.0", "n3/agent.0"}) {
      ActorMessage hb = make_message(node, "", runtime::heartbeat_type, control::Heartbeat{});
      to_coordinator(hb);
    }
    sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
    run();
    EXPECT_EQ(count_events("recover"), 0u) << "at " << t << " ms";
  }
  sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
  run();
  ASSERT_EQ(count_events("recover"), 1u);
  EXPECT_NE(events.back().second.find("node n2"), std::string::npos) << events.back().second;
  EXPECT_NE(events.back().second.find("missed heartbeats"), std::string::npos);
}

// Every node silent at once: more likely the coordinator's or the machine's stall than every
// node dying together (issue 14's soak lost a whole job that way), so the coordinator waits
// all_silent_timeout_factor timeouts before declaring a node dead, and says why once.
TEST_F(CoordinatorScript, WhenEveryNodeIsSilentTheCoordinatorWaitsLonger) {
  const auto& ft = config.fault_tolerance;
  const int64_t patience = all_silent_timeout_factor * ft.heartbeat_timeout_ms;
  for (int64_t t = ft.heartbeat_interval_ms; t <= patience; t += ft.heartbeat_interval_ms) {
    sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
    run();
    EXPECT_EQ(count_events("recover"), 0u) << "at " << t << " ms";
  }
  EXPECT_EQ(count_events("all_nodes_silent"), 1u);
  sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
  run();
  ASSERT_EQ(count_events("recover"), 1u);
  EXPECT_NE(events.back().second.find("every node silent"), std::string::npos)
      << events.back().second;
}

// The nodes fall silent one after another, heard last a heartbeat apart (CI, kill0 under lent:
// the coordinator's receive FIFO stalled 13 ms into the job). The first one's timeout ran out
// while the last one was still within its own, so it was declared dead by the ordinary rule
// before every node counted as silent. No node heard for half a timeout already counts.
TEST_F(CoordinatorScript, NodesFallingSilentOneByOneAreGivenTheLongerPatience) {
  const auto& ft = config.fault_tolerance;
  const auto tick = std::chrono::milliseconds(ft.heartbeat_interval_ms);
  const auto heard = [&](std::initializer_list<const char*> nodes) {
    for (const char* n : nodes)
      to_coordinator(make_message(n, "", runtime::heartbeat_type, control::Heartbeat{}));
    sched.clock().advance_time(tick);
    run();
  };
  heard({"n1/agent.0", "n2/agent.0", "n3/agent.0"});
  heard({"n2/agent.0", "n3/agent.0"});
  heard({"n3/agent.0"});
  const int64_t patience = all_silent_timeout_factor * ft.heartbeat_timeout_ms;
  for (int64_t t = ft.heartbeat_interval_ms; t < patience - 2 * ft.heartbeat_interval_ms;
       t += ft.heartbeat_interval_ms) {
    heard({});
    ASSERT_EQ(count_events("recover"), 0u) << t << " ms after the last node was heard";
  }
  EXPECT_EQ(count_events("all_nodes_silent"), 1u);
}

// When every node's silence ends with one node heard again, the others' messages are still
// queued behind the stall: each gets a fresh timeout, and one still silent after it is
// declared dead by the ordinary rule.
TEST_F(CoordinatorScript, WhenEveryNodesSilenceEndsTheOthersGetAFreshTimeout) {
  const auto& ft = config.fault_tolerance;
  const auto tick = std::chrono::milliseconds(ft.heartbeat_interval_ms);
  const auto n1_heard = [&] {
    to_coordinator(make_message("n1/agent.0", "", runtime::heartbeat_type, control::Heartbeat{}));
    sched.clock().advance_time(tick);
    run();
  };
  for (int64_t t = ft.heartbeat_interval_ms; t <= 2 * ft.heartbeat_timeout_ms;
       t += ft.heartbeat_interval_ms) {
    sched.clock().advance_time(tick);
    run();
  }
  ASSERT_EQ(count_events("all_nodes_silent"), 1u);
  ASSERT_EQ(count_events("recover"), 0u);
  for (int64_t t = ft.heartbeat_interval_ms; t <= ft.heartbeat_timeout_ms;
       t += ft.heartbeat_interval_ms) {
    n1_heard();
    EXPECT_EQ(count_events("recover"), 0u) << t << " ms after n1 was heard again";
  }
  for (int64_t t = 0; t < 3 * ft.heartbeat_interval_ms && count_events("recover") == 0; t++)
    n1_heard();
  ASSERT_EQ(count_events("recover"), 1u);
  EXPECT_EQ(events.back().second.find("every node silent"), std::string::npos)
      << events.back().second;
  EXPECT_NE(events.back().second.find("missed heartbeats"), std::string::npos)
      << events.back().second;
}

// A node evicted for its silence is told so with the epoch of the view that dropped it (it
// exits with exit_status_evicted, and launch replaces it), and the router refuses its late
// messages as an evicted node's from that epoch on.
TEST_F(CoordinatorScript, ANodeEvictedForItsSilenceIsToldTheEpoch) {
  const auto& ft = config.fault_tolerance;
  const uint64_t before = net->epoch;
  for (int64_t t = 0; t <= ft.heartbeat_timeout_ms + ft.heartbeat_interval_ms;
       t += ft.heartbeat_interval_ms) {
    for (const char* node : {"n1/agent.0", "n3/agent.0"})
      to_coordinator(make_message(node, "", runtime::heartbeat_type, control::Heartbeat{}));
    sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
    run();
  }
  ASSERT_EQ(count_events("recover"), 1u);
  ASSERT_EQ(net->evicted.size(), 1u);
  EXPECT_EQ(net->evicted[0].first, "n2");
  EXPECT_EQ(net->evicted[0].second, before + 1) << "the epoch of the view without it";
  std::vector<control::Shutdown> told;
  for (const ActorMessage& m : net->of_type(runtime::shutdown_type)) {
    control::Shutdown sd;
    ASSERT_TRUE(sd.ParseFromString(m.header));
    if (m.to == "n2/agent.0") told.push_back(sd);
  }
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0].evicted_epoch(), before + 1);
  EXPECT_NE(told[0].reason().find("declared lost"), std::string::npos) << told[0].reason();
}

// A node killed (its endpoint failed) cannot hear a Shutdown; it is evicted all the same.
TEST_F(CoordinatorScript, AKilledNodeIsEvictedWithoutAShutdown) {
  lose("n2");
  ASSERT_EQ(net->evicted.size(), 1u);
  EXPECT_EQ(net->evicted[0].first, "n2");
  for (const ActorMessage& m : net->of_type(runtime::shutdown_type))
    EXPECT_NE(m.to, "n2/agent.0") << "a dead node was sent a Shutdown";
}

// Every refusal the router reports is an event with typed fields.
TEST_F(CoordinatorScript, ARefusedConnectionIsAnEvent) {
  runtime::ConnectionRefusal r{"127.0.0.1:7001",     "n2", 0,  "evicted",
                               "evicted at epoch 4", 4,    12, 1000};
  caf::anon_send(coordinator, runtime::refused_atom::value, r);
  run();
  ASSERT_EQ(count_events("connection_refused"), 1u);
  const nlohmann::json& f = event_fields.back();
  EXPECT_EQ(f["cause"], "evicted");
  EXPECT_EQ(f["node"], "n2");
  EXPECT_EQ(f["peer_address"], "127.0.0.1:7001");
  EXPECT_EQ(f["evicted_epoch"], 4);
  EXPECT_EQ(f["more"], 12);
  EXPECT_EQ(events.back().second,
            "12 more refused from n2 in the last second (evicted: evicted at epoch 4)");
}

TEST_F(CoordinatorScript, ARecoveryPastItsTimeoutEndsTheJobNamingWhoIsLate) {
  lose("n2");
  recovered(0);
  const auto& ft = config.fault_tolerance;
  for (int64_t t = 0; t <= ft.recovery_timeout_ms && !result; t += ft.heartbeat_interval_ms) {
    for (const char* node : {"n1/agent.0", "n3/agent.0"})
      to_coordinator(make_message(node, "", runtime::heartbeat_type, control::Heartbeat{}));
    sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
    run();
  }
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("did not finish within"), std::string::npos) << result->error;
  EXPECT_NE(result->error.find("waiting for n3/worker.2"), std::string::npos) << result->error;
}

class StepTimeout : public CoordinatorScript {
 protected:
  // Every node heartbeats for `for_ms` of virtual time (no one is lost for silence).
  void all_alive_for(int64_t for_ms) {
    const auto& ft = config.fault_tolerance;
    for (int64_t t = 0; t < for_ms && !result; t += ft.heartbeat_interval_ms) {
      for (const char* node : {"n1/agent.0", "n2/agent.0", "n3/agent.0"})
        to_coordinator(make_message(node, "", runtime::heartbeat_type, control::Heartbeat{}));
      sched.clock().advance_time(std::chrono::milliseconds(ft.heartbeat_interval_ms));
      run();
    }
  }
};

// A lost StepDone (nothing resends a step message): past step_timeout_ms the coordinator
// names what it waited for and sends every worker back to the committed step, every node
// kept; the step is redone and commits.
TEST_F(StepTimeout, AStalledStepIsRedoneWithEveryNodeKept) {
  step(0);
  for (int64_t i = 0; i < 3; ++i) stats(i, 1), norms(i, 1);
  done(0, 1), done(1, 1);  // worker 2's StepDone is lost
  const uint64_t before = net->epoch;
  const int64_t limit_ms = config.fault_tolerance.step_timeout_ms;
  all_alive_for(limit_ms - 2 * config.fault_tolerance.heartbeat_interval_ms);
  EXPECT_EQ(count_events("recover"), 0u) << "redone before step_timeout_ms";
  all_alive_for(4 * config.fault_tolerance.heartbeat_interval_ms);
  ASSERT_EQ(count_events("recover"), 1u);
  EXPECT_NE(events.back().second.find("waiting for StepDone from n3/worker.2"), std::string::npos)
      << events.back().second;
  EXPECT_GT(net->epoch, before);
  EXPECT_TRUE(net->evicted.empty());
  const auto recovers = net->of_type(recover_type);
  ASSERT_EQ(recovers.size(), 3u);  // to every worker
  train::Recover r;
  ASSERT_TRUE(r.ParseFromString(recovers[0].header));
  EXPECT_EQ(r.version(), 1);  // step 0 committed, step 1 not
  EXPECT_EQ(r.workers_size(), 3);
  EXPECT_EQ(r.old_workers(), 3);
  for (int64_t i = 0; i < 3; ++i) recovered(i);
  EXPECT_EQ(count_sent(step_begin_type), 3u + 3u + 3u);  // step 1 again, on all three
  step(1);
  EXPECT_EQ(log->commits.size(), 2u);
  EXPECT_EQ(log->commits[1].workers, 3);
}

// A job whose steps are slow is not redone for it: the coordinator waits at least 4x the
// slowest committed step, whatever step_timeout_ms (30 s) says.
TEST_F(StepTimeout, ASlowJobWaitsFourTimesItsSlowestStep) {
  for (int64_t i = 0; i < 3; ++i) stats(i, 0), norms(i, 0);
  all_alive_for(10000);  // step 0 takes 10 s
  for (int64_t i = 0; i < 3; ++i) done(i, 0);
  for (int64_t i = 0; i < 3; ++i) stats(i, 1), norms(i, 1);
  done(0, 1), done(1, 1);  // worker 2's StepDone is lost
  all_alive_for(35000);
  EXPECT_EQ(count_events("recover"), 0u) << "redone past step_timeout_ms but before 4 x 10 s";
  all_alive_for(6000);
  ASSERT_EQ(count_events("recover"), 1u);
  EXPECT_NE(events.back().second.find("within 40000 ms"), std::string::npos)
      << events.back().second;
}

// A loss that persists: the step stalls again after every redo, and the job stops saying so
// instead of redoing it for ever.
TEST_F(StepTimeout, AStepThatKeepsStallingEndsTheJob) {
  const int64_t limit_ms = config.fault_tolerance.step_timeout_ms;
  for (int64_t redo = 0; redo < 4 && !result; ++redo) {
    for (int64_t i = 0; i < 2; ++i) stats(i, 0), norms(i, 0);  // worker 2's reports are lost
    all_alive_for(limit_ms + 2 * config.fault_tolerance.heartbeat_interval_ms);
    for (int64_t i = 0; i < 3 && !result; ++i) recovered(i);
  }
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("redone 3 times and stalled each time"), std::string::npos)
      << result->error;
  EXPECT_NE(result->error.find("Stats from n3/worker.2"), std::string::npos) << result->error;
  EXPECT_EQ(count_events("recover"), 3u);
}

}  // namespace
}  // namespace troupe::actors::testing
