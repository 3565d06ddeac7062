// `troupe launch`'s side of the control endpoint (launch/control.h): the ControlTarget over
// the coordinator (requests through actors::ask_coordinator, which answers from the
// coordinator's own thread), the job's metrics (JobMetrics) and a bounded history of steps
// and events for GET /history and the page. Fed by launch's step and event callbacks (the
// coordinator's thread); read by the endpoint's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "launch/control.h"
#include "launch/control_history.h"
#include "launch/job_metrics.h"

namespace troupe::launch {

class JobControl : public ControlTarget {
 public:
  // ask(kind, nodes, node): "" when the coordinator accepted, else why not. status(): the
  // coordinator's view of the job (actors::coordinator_status), as JSON.
  using Ask = std::function<std::string(const std::string&, int64_t, const std::string&)>;
  JobControl(Ask ask, std::function<nlohmann::json()> status);

  // From launch's callbacks.
  void on_step(int64_t step, double loss, double tokens_per_s, double t_s, const double* val_loss);
  void on_event(const nlohmann::json& line);  // as written to events.jsonl

  nlohmann::json status() override;
  std::string metrics_text() override { return metrics_.text(); }
  nlohmann::json history() override;
  ControlReply scale(int64_t nodes) override { return reply(ask_("scale", nodes, "")); }
  ControlReply drain(const std::string& node) override { return reply(ask_("drain", 0, node)); }
  ControlReply pause() override { return reply(ask_("pause", 0, "")); }
  ControlReply resume() override { return reply(ask_("resume", 0, "")); }
  ControlReply checkpoint() override { return reply(ask_("checkpoint", 0, "")); }
  ControlReply engram_attach(const std::string& name, const std::string& path) override {
    return reply(ask_("engram_attach", 0, nlohmann::json{{"name", name}, {"path", path}}.dump()));
  }
  ControlReply engram_detach() override { return reply(ask_("engram_detach", 0, "")); }

  JobMetrics& metrics() { return metrics_; }

 private:
  static ControlReply reply(const std::string& refusal) {
    return refusal.empty() ? ControlReply{200, "accepted"} : ControlReply{400, refusal};
  }

  Ask ask_;
  std::function<nlohmann::json()> status_;
  JobMetrics metrics_;
  std::mutex mu_;
  ControlHistory history_{control_history_steps_max, control_history_events_max,
                          control_history_event_bytes_max};
  double tokens_per_s_ = 0, loss_ = 0;
};

}  // namespace troupe::launch
