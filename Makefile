# steward: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
BIN := target/debug
EXAMPLE := target/example

.PHONY: all build release run test bench lint clean

all: build

# The executor is linked statically (+crt-static: no dynamic loader on the spawn path). The
# flag goes to that one binary only: in RUSTFLAGS it would break the proc-macro crates.
build:
	$(CARGO) build --workspace --exclude steward-executor --bins
	$(CARGO) rustc -p steward-executor --bin steward-executor -- -C target-feature=+crt-static

# Runs steward in the foreground on the bundled example config; Ctrl-C stops it cleanly.
run: build
	@mkdir -p $(EXAMPLE)
	@sed -e 's|@EXAMPLES@|$(CURDIR)/examples/services|g' -e 's|@BIN@|$(CURDIR)/$(BIN)|g' \
		-e 's|@RUN@|$(CURDIR)/$(EXAMPLE)/run|g' examples/steward.toml > $(EXAMPLE)/steward.toml
	$(BIN)/steward --config $(EXAMPLE)/steward.toml --control $(EXAMPLE)/control

# Unit tests, then the integration tests that drive the real binaries built above.
test: build
	$(CARGO) test --workspace


# The release binaries the benchmarks measure.
release:
	$(CARGO) build --release --workspace --exclude steward-executor --bins
	$(CARGO) rustc --release -p steward-executor --bin steward-executor -- -C target-feature=+crt-static

# Benchmarks against the release binaries; the report goes to target/bench/report.md.
bench: release
	target/release/steward-bench --bin-dir target/release --out target/bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
