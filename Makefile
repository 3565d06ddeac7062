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
DEMO_KILL_AT ?= 60

# The job on DEMO_NODES node processes on 127.0.0.1 (coordinator in the launch process);
# one node process is killed (-9) after step DEMO_KILL_AT and the others carry on: the
# weights hash at the end is the one an undisturbed single process gets.
demo: build
	rm -rf runs/demo
	$(BUILD)/troupe launch --config configs/tiny.toml --nodes $(DEMO_NODES) --run-dir runs/demo \
	  --steps $(DEMO_STEPS) --kill-node-at $(DEMO_KILL_AT) --set checkpoint.every_steps=20

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

# Random single faults (kill -9 or SIGSTOP of one node, at a random step) on 3-4 node
# jobs; each must end with the undisturbed run's weights. CHAOS_RUNS (12), not in CI.
.PHONY: chaos-soak
chaos-soak: build
	tests/launch/chaos_soak.sh $(BUILD)

# Issue 12: tokens/s with a checkpoint every 10 steps next to none (stall %), and the store's
# write bandwidth next to the disk's own write+fdatasync, both in the same run. ~4 min.
.PHONY: bench-checkpoint
bench-checkpoint: build
	bench/run_bench_checkpoint.sh $(BUILD)

# The long kill loop of issue 12: the whole job killed (process group, SIGKILL) at random
# moments STORAGE_KILLS (200) times over a STORAGE_STEPS (200) step job, each time resumed on 1-4 nodes; it must end with the
# undisturbed weights and a clean ledger. Prints its seed; STORAGE_SEED=S replays it.
.PHONY: chaos-storage
chaos-storage: build
	STORAGE_KILLS=$${STORAGE_KILLS:-200} STORAGE_STEPS=$${STORAGE_STEPS:-200} python3 tests/launch/storage_test.py \
	  --troupe $(BUILD)/troupe --work $(BUILD)/chaos_storage --only loop
