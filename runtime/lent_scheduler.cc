#include "runtime/lent_scheduler.h"

#include <atomic>
#include <caf/all.hpp>
#include <caf/policy/unprofiled.hpp>
#include <caf/scheduler/coordinator.hpp>
#include <caf/scoped_execution_unit.hpp>
#include <condition_variable>
#include <list>
#include <mutex>

namespace troupe::runtime {

namespace {

// caf::policy::work_sharing (CAF 0.17), except that an enqueue wakes no worker while a
// fabric thread is lent (`lent`): that thread takes the job on its next poll.
class LentSharing : public caf::policy::unprofiled {
 public:
  using queue_type = std::list<caf::resumable*>;

  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}
    queue_type queue;
    std::mutex lock;
    std::condition_variable cv;
    bool lent = false;  // a fabric thread polls `queue` (under `lock`)
    // Jobs in `queue`, written under `lock`: the lent thread looks here between polls, and
    // locks only when there is work. Locking on every poll of an empty queue took a third of
    // a sending node's time in bench_actors, against the threads that enqueue.
    std::atomic<size_t> queued{0};
  };

  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator*) {}
  };

  ~LentSharing() override = default;

  template <class Coordinator>
  void enqueue(Coordinator* self, caf::resumable* job) {
    queue_type node;
    node.push_back(job);
    bool wake = false;
    {
      std::lock_guard<std::mutex> guard(d(self).lock);
      d(self).queue.splice(d(self).queue.end(), node);
      d(self).queued.store(d(self).queue.size(), std::memory_order_release);
      wake = !d(self).lent;
    }
    if (wake) d(self).cv.notify_one();
  }

  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    enqueue(self, job);
  }
  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }
  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& data = d(self->parent());
    std::unique_lock<std::mutex> guard(data.lock);
    data.cv.wait(guard, [&] { return !data.queue.empty(); });
    caf::resumable* job = data.queue.front();
    data.queue.pop_front();
    data.queued.store(data.queue.size(), std::memory_order_release);
    return job;
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker*, UnaryFunction) {}

  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator* self, UnaryFunction f) {
    std::unique_lock<std::mutex> guard(d(self).lock);
    auto& queue = d(self).queue;
    while (!queue.empty()) {
      caf::resumable* job = queue.front();
      queue.pop_front();
      d(self).queued.store(queue.size(), std::memory_order_release);
      f(job);
    }
  }
};

using LentCoordinator = caf::scheduler::coordinator<LentSharing>;

// Runs the coordinator's jobs on the fabric thread that calls it (FabricGuest).
class SchedulerGuest final : public FabricGuest {
 public:
  SchedulerGuest(caf::actor_system& system, LentCoordinator& coordinator)
      : unit_(&system), data_(coordinator.data()) {}

  bool run() override {
    size_t ran = 0;
    while (ran < lent_jobs_per_poll) {
      caf::resumable* job = take();
      if (job == nullptr) break;
      resume(job);
      ++ran;
    }
    return ran > 0;
  }

  void step_in() override {
    std::lock_guard<std::mutex> guard(data_.lock);
    data_.lent = true;
  }

  void step_aside() override {
    bool ready = false;
    {
      std::lock_guard<std::mutex> guard(data_.lock);
      data_.lent = false;
      ready = !data_.queue.empty();
    }
    if (ready) data_.cv.notify_all();  // what waited for this thread goes to the workers
  }

 private:
  // The next job, unless the queue is empty or its head is not an actor's or a task's: the
  // coordinator's shutdown job must reach one of its own workers (it stops that worker).
  caf::resumable* take() {
    // A job queued after this read is taken on the next poll, or by a worker once this
    // thread steps aside (step_aside looks at the queue under the lock).
    if (data_.queued.load(std::memory_order_acquire) == 0) return nullptr;
    std::unique_lock<std::mutex> guard(data_.lock);
    if (data_.queue.empty()) return nullptr;
    caf::resumable* job = data_.queue.front();
    const auto kind = job->subtype();
    if (kind != caf::resumable::scheduled_actor && kind != caf::resumable::function_object) {
      guard.unlock();
      data_.cv.notify_one();
      return nullptr;
    }
    data_.queue.pop_front();
    data_.queued.store(data_.queue.size(), std::memory_order_release);
    return job;
  }

  // As a CAF worker resumes a job (caf/scheduler/worker.hpp), with a smaller budget.
  void resume(caf::resumable* job) {
    switch (job->resume(&unit_, lent_messages_per_resume)) {
      case caf::resumable::resume_later:
        unit_.exec_later(job);  // back into the queue, keeping its reference
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
        caf::intrusive_ptr_release(job);
        break;
      case caf::resumable::shutdown_execution_unit:  // not taken (take())
        break;
    }
  }

  caf::scoped_execution_unit unit_;  // exec_later: into the coordinator's queue
  LentSharing::coordinator_data& data_;
};

}  // namespace

void use_lent_scheduler(caf::actor_system_config& config) {
  config.load<LentCoordinator>();
}

std::shared_ptr<FabricGuest> make_scheduler_guest(caf::actor_system& system) {
  auto* coordinator = dynamic_cast<LentCoordinator*>(&system.scheduler());
  if (coordinator == nullptr) return nullptr;
  return std::make_shared<SchedulerGuest>(system, *coordinator);
}

}  // namespace troupe::runtime
