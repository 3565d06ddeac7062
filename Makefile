# The two commands a user runs, plus the separate long targets.
BUILD ?= build
JOBS ?= $(shell nproc)
DEMO_STEPS ?= 120

.PHONY: all build demo test bench bench-optim clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

DEMO_NODES ?= 3
DEMO_KILL_AT ?= 30
DEMO_SCALE_UP_AT ?= 50
DEMO_SCALE_UP_TO ?= 4
DEMO_SCALE_DOWN_AT ?= 80
DEMO_SCALE_DOWN_TO ?= 2
PYTHON ?= /usr/bin/python3

# The job users came for (tools/demo.py): DEMO_NODES node processes on 127.0.0.1 train tiny
# into runs/demo; one is killed (-9) after step DEMO_KILL_AT and replaced by a fresh one
# (fault_tolerance.replace_lost), `troupe scale runs/demo DEMO_SCALE_UP_TO` runs around step
# DEMO_SCALE_UP_AT and `troupe scale runs/demo DEMO_SCALE_DOWN_TO` around DEMO_SCALE_DOWN_AT.
# It ends with the weights hash of an undisturbed `troupe train` (runs/demo-ref), or fails,
# and a table of what happened: detected after, training again after, steps redone.
demo: build
	DEMO_STEPS=$(DEMO_STEPS) DEMO_NODES=$(DEMO_NODES) DEMO_KILL_AT=$(DEMO_KILL_AT) \
	  DEMO_SCALE_UP_AT=$(DEMO_SCALE_UP_AT) DEMO_SCALE_UP_TO=$(DEMO_SCALE_UP_TO) \
	  DEMO_SCALE_DOWN_AT=$(DEMO_SCALE_DOWN_AT) DEMO_SCALE_DOWN_TO=$(DEMO_SCALE_DOWN_TO) \
	  $(PYTHON) tools/demo.py $(BUILD)

# The demo's run directory continued from its newest checkpoint on two nodes: the same hash.
.PHONY: demo-resume
demo-resume: build
	$(BUILD)/troupe launch --config configs/tiny.toml --nodes 2 --run-dir runs/demo \
	  --steps $(DEMO_STEPS) --set checkpoint.every_steps=20 --resume

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	bench/run_bench.sh $(BUILD)

# AdamW vs Muon on tiny, same steps (BENCH_OPTIM_STEPS, default 600): curves, time, ratio.
bench-optim: build
	bench/run_bench_optim.sh $(BUILD)

clean:
	rm -rf $(BUILD)

# SPEC §10's FP8 claim: FP8 vs FP32 on tiny (BENCH_FP8_STEPS, 600), next to the FP32 run's
# own noise floor (two runs with lr × (1 ± 1e-6)). Four runs, ~15 min on 2 cores.
.PHONY: bench-fp8-loss
bench-fp8-loss: build
	bench/run_bench_fp8_loss.sh $(BUILD)

.PHONY: bench-fabric
bench-fabric: build
	bench/fabric/run_bench_fabric.sh $(BUILD)

# The runtime's overhead: one node process under `troupe launch` vs one plain process.
.PHONY: bench-dp
bench-dp: build
	bench/run_bench_dp.sh $(BUILD)

# Issue 15: tokens/s with the routed experts on expert_shard actors next to the same job with
# them in the workers, 3 node processes each, same run (CONFIG=, default tiny; bench/run_bench_placement.sh).
.PHONY: bench-experts
bench-experts: build
	bench/run_bench_experts.sh $(BUILD)

# Issue 17: mixed-length packing's padding waste next to fixed-length padding on the fortunes
# documents (SCHED_STEPS steps, several budgets), then tokens/s of pulled scheduling next to the
# static split with one of 3 workers computing 2x slower, same run (docs/schedule.md).
SCHED_STEPS ?= 200
# Issue 17: completion tokens/s of lag-1 asynchronous GRPO (rollout node sampling step s+1
# while the worker trains step s) next to generate-then-train, same run, same bits.
.PHONY: bench-grpo
bench-grpo: build
	bench/run_bench_grpo.sh $(BUILD)

# Issue 18: peak RSS and step time of each [memory] setting (recompute none | attention | block
# | full, with and without optimizer offload) on configs/small.toml by alternating runs, as
# ratios to recompute = "none" in the same run; every run's weights hash must be one
# (ROUNDS, STEPS, THREADS, CONFIG; docs/memory.md).
.PHONY: bench-memory
bench-memory: build
	MODES_EXTRA="full:memory.recompute=full;block+offload:memory.recompute=block,memory.offload_optimizer=true;full+offload:memory.recompute=full,memory.offload_optimizer=true" \
	  $(PYTHON) bench/run_bench_memory.py $(BUILD)

.PHONY: bench-sched
bench-sched: build
	SCHED_STEPS=$(SCHED_STEPS) bench/run_bench_sched.sh $(BUILD)

# Issue 17, item 3: tokens/s of KV-cache decoding next to recomputing the full forward at every
# Issue 17's GRPO in one process (docs/grpo.md): configs/arith-sft.toml's supervised run, then
# configs/grpo-tiny.toml's 200 GRPO steps from its weights (runs/arith-sft, runs/grpo-tiny,
# both made afresh). The last lines are the reward curve: first and last 20 steps, 50-step blocks.
.PHONY: grpo-demo
grpo-demo: build
	rm -rf runs/arith-sft runs/grpo-tiny
	$(BUILD)/troupe train --config configs/arith-sft.toml --run-dir runs/arith-sft
	$(BUILD)/troupe train --config configs/grpo-tiny.toml --run-dir runs/grpo-tiny

# step, GEN_NEW (128) new tokens on tiny, same run: both figures and their ratio (docs/generate.md).
GEN_NEW ?= 128
.PHONY: bench-generate
bench-generate: build
	$(BUILD)/bench/bench_generate $(GEN_NEW)

# Issue 16: the Engram tables on engram_shard actors next to replicated ones, same run.
.PHONY: bench-engram
bench-engram: build
	bench/run_bench_engram.sh $(BUILD)

# Issue 15, the offline part of bench-eplb:
# `troupe eplb`'s placement next to DeepSeek's eplb.py under torch, same run, on 61 layers x
# 256 experts (R=288 G=8 N=4 P=32, Zipf loads): both times, their ratio, both balances.
.PHONY: bench-eplb-offline
bench-eplb-offline: build
	$(PYTHON) bench/run_bench_eplb.py $(BUILD)

# Issue 15's bench-eplb: the offline part, then the rebalancer in a job on skewed routing
# (configs/skewed-experts.toml, 3 nodes): measured imbalance before and after, eplb.py's on
# the same loads, the pause per rebalance, same weights as without rebalancing. ~2 min.
.PHONY: bench-eplb
bench-eplb: bench-eplb-offline
	$(PYTHON) bench/run_bench_eplb_online.py $(BUILD)

# Random single faults (kill -9 or SIGSTOP of one node, at a random step) on 3-4 node
# jobs; each must end with the undisturbed run's weights. CHAOS_RUNS (12), not in CI.
# Issue 14's soak: one long job with a random fault (kill, hang, scale up, drain, coordinator
# kill) every 30 s; samples RSS, fds and threads of every process (samples.csv, soak.png) and
# checks that the long-lived ones do not grow after the first 10 minutes. Not in CI.
SOAK_MINUTES ?= 120
.PHONY: soak
soak: build
	SOAK_MINUTES=$(SOAK_MINUTES) $(PYTHON) tools/soak.py $(BUILD)

# Issue 14's deterministic simulation: SIM_SEEDS whole jobs on a simulated fabric and clock
# (chaos/sim), one schedule per seed from SIM_FIRST_SEED, on 2 processes; prints schedules per
# hour and every failing seed with the command that replays it.
SIM_SEEDS ?= 1000
SIM_FIRST_SEED ?= 1
.PHONY: sim
sim: build
	$(BUILD)/troupe-sim --seeds $(SIM_SEEDS) --first-seed $(SIM_FIRST_SEED) --jobs 2

.PHONY: chaos-soak
chaos-soak: build
	tests/launch/chaos_soak.sh $(BUILD)

# Issue 12: tokens/s with a checkpoint every 10 steps next to none (stall %) and the extra CPU
# per checkpoint, the CPU of each phase of a checkpoint, and the store's write bandwidth next
# to the disk's own write+fdatasync, all in the same run. ~12 min.
.PHONY: bench-checkpoint
bench-checkpoint: build
	bench/run_bench_checkpoint.sh $(BUILD)

# Issue 13: detection and recovery times of kill -9 and SIGSTOP of a node, and the training
# pause of `troupe scale` up and down, next to the step time of the same job. Not in CI.
#   BENCH_RECOVERY_KILLS (20), _HANGS (5), _SCALES (5), _NODES (3), _HEARTBEAT (100/1000),
#   _SEED (printed; replays the victims and moments). ~5 min on 2 cores.
.PHONY: bench-recovery
bench-recovery: build
	$(PYTHON) bench/run_bench_recovery.py $(BUILD)

# The long kill loop of issue 12: the whole job killed (process group, SIGKILL) at random
# moments STORAGE_KILLS (200) times over a STORAGE_STEPS (200) step job, each time resumed on 1-4 nodes; it must end with the
# undisturbed weights and a clean ledger. Prints its seed; STORAGE_SEED=S replays it.
.PHONY: chaos-storage
chaos-storage: build
	STORAGE_KILLS=$${STORAGE_KILLS:-200} STORAGE_STEPS=$${STORAGE_STEPS:-200} python3 tests/launch/storage_test.py \
	  --troupe $(BUILD)/troupe --work $(BUILD)/chaos_storage --only loop

# Issue 14: every scenario of chaos/scenarios (troupe chaos run --all; docs/chaos.md): each
# against the undisturbed reference (cached in runs/chaos-cache), its run kept in runs/chaos.
# The fast ones also run in ctest (chaos.scenarios_fast). CHAOS_SEED overrides the scenarios'.
CHAOS_SEED ?=
.PHONY: chaos
chaos: build
	$(BUILD)/troupe chaos run --all $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# Random scenarios drawn from a seed for SOAK_CHAOS_MINUTES; every failure prints its replay.
SOAK_CHAOS_MINUTES ?= 20
.PHONY: chaos-random
chaos-random: build
	$(BUILD)/troupe chaos soak --minutes $(SOAK_CHAOS_MINUTES) --seed $(or $(CHAOS_SEED),1)

# libFuzzer targets (tests/fuzz, docs/chaos.md "Fuzzing"), built with clang + ASan + UBSan in
# FUZZ_BUILD. `make fuzz` runs each target FUZZ_SECONDS, one at a time, under nice -n 19;
# `make fuzz-target T=NAME RUNS=N` runs one for N executions. Crashes: FUZZ_WORK/crashes.
FUZZ_BUILD ?= build-fuzz
FUZZ_WORK ?= $(FUZZ_BUILD)/fuzz-work
FUZZ_TARGETS ?= wire batch control config safetensors shard http
FUZZ_SECONDS ?= 60
RUNS ?= 100000
T ?=
.PHONY: fuzz fuzz-build fuzz-target

$(FUZZ_BUILD)/CMakeCache.txt:
	cmake -S . -B $(FUZZ_BUILD) -DTROUPE_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_BUILD_TYPE=Release

fuzz-build: $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addsuffix _fuzz,$(FUZZ_TARGETS))

fuzz: fuzz-build
	tests/fuzz/run_fuzz.sh $(FUZZ_BUILD) $(FUZZ_WORK) seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-target: $(FUZZ_BUILD)/CMakeCache.txt
	@test -n "$(T)" || { echo "make fuzz-target: say which, T=NAME (one of $(FUZZ_TARGETS))"; exit 2; }
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(T)_fuzz
	tests/fuzz/run_fuzz.sh $(FUZZ_BUILD) $(FUZZ_WORK) runs $(RUNS) $(T)

# Issue 14's sanitizer runs (docs/chaos.md "Sanitizers"): the whole tree and the whole test
# suite built with g++ and ASan + UBSan (ASAN_BUILD) or TSan (TSAN_BUILD). The suppression
# files in tests/sanitizers name third-party frames only, each with why. Leaks are checked.
# SAN_CTEST_ARGS passes more to ctest (e.g. -R Journal to run a part). Their tests' timeouts
# are TROUPE_TEST_TIMEOUT_SCALE times the plain build's (8 TSan, 3 ASan; tests/CMakeLists.txt).
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
SAN_CTEST_ARGS ?=
SAN_DIR := $(CURDIR)/tests/sanitizers
.PHONY: test-asan test-tsan

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Release -DTROUPE_SANITIZE=address

$(TSAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Release -DTROUPE_SANITIZE=thread

test-asan: $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
	  LSAN_OPTIONS=suppressions=$(SAN_DIR)/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(SAN_DIR)/ubsan.supp \
	  ctest --output-on-failure -j $(JOBS) $(SAN_CTEST_ARGS)

# UCX's memory hooks (libucm's madvise, called by glibc as a thread exits) take a lock that
# TSan's interceptor is not ready for there: `troupe train` segfaulted at its first
# thread's exit. The hooks only serve registered-memory caches, which shm and tcp do not use.
test-tsan: $(TSAN_BUILD)/CMakeCache.txt
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && \
	  UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no \
	  TSAN_OPTIONS=suppressions=$(SAN_DIR)/tsan.supp:halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j $(JOBS) $(SAN_CTEST_ARGS)
