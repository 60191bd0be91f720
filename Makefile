# steward: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
BIN := target/debug
EXAMPLE := target/example

.PHONY: all build release hot-functions run test test-all vm-test vm-debian vm-debian-measure bench fuzz chaos lint clean

all: build

# The executor is built without libc (`no_libc`, see executor/src/main.rs): origin's `_start`
# starts it (-nostartfiles), it is static (+crt-static: no dynamic loader on the spawn path) and
# not position-independent (without a dynamic loader, nothing would apply PIE relocations), and
# a no_std binary must abort on panic. The flags go to that one crate only: in RUSTFLAGS they
# would break the proc-macro crates.
EXECUTOR_FLAGS := --cfg no_libc -C panic=abort -C target-feature=+crt-static \
	-C relocation-model=static -C link-arg=-nostartfiles

# steward-faulty is the manager with the cargo feature fault-injection (`stewardctl debug
# panic|hang`), for the tests of panic recovery; built first, so that target/debug/steward is
# the ordinary one (cargo keeps both builds of the crate, so switching only links again).
build:
	$(CARGO) build -p steward --features fault-injection --bin steward
	cp $(BIN)/steward $(BIN)/steward-faulty
	$(CARGO) build --workspace --exclude steward-executor --bins
	$(CARGO) rustc -p steward-executor --bin steward-executor -- $(EXECUTOR_FLAGS)

# Runs steward in the foreground on the bundled example config; Ctrl-C stops it cleanly.
run: build
	@mkdir -p $(EXAMPLE)
	@sed -e 's|@EXAMPLES@|$(CURDIR)/examples/services|g' -e 's|@BIN@|$(CURDIR)/$(BIN)|g' \
		-e 's|@RUN@|$(CURDIR)/$(EXAMPLE)/run|g' examples/steward.toml > $(EXAMPLE)/steward.toml
	$(BIN)/steward --config $(EXAMPLE)/steward.toml --control $(EXAMPLE)/control

# Unit tests, then the integration tests that drive the real binaries built above. Tests that
# need root are marked #[ignore = "needs root"]: run as root (as CI runs it), they run too;
# without root, libtest lists each one as ignored.
ROOT := $(filter 0,$(shell id -u))
test: build
	$(CARGO) test --workspace $(if $(ROOT),-- --include-ignored)
	@$(if $(ROOT),true,echo "make test: not run as root, so the tests marked 'ignored, needs root' above did not run")

# Boots a real kernel under QEMU with steward as /init (installs the kernel and QEMU from
# Debian if missing); the console log goes to target/vm/console.log.
vm-test: build
	bash vm/vm-test

# A minimal Debian bookworm (mmdebstrap, cached under target/vm-debian/) booted under QEMU
# with steward as init and, for comparison, with systemd: login prompt, serial login, ssh,
# logger, reboot, poweroff and a clean file system, checked from the host. Console logs and
# boot summaries go to target/vm/. STEWARD_CONFIG=graph|today|auto picks the steward config.
vm-debian: release
	bash vm/debian/vm-debian

# Five boots of each image; the medians go to target/vm/debian-boot.md.
vm-debian-measure: release
	bash vm/debian/vm-debian measure $(or $(RUNS),5)

# Everything: the tests, then the VM boot.
test-all: test vm-test

# libFuzzer on what steward trusts and reads: the spawn state, the reexec state, control
# frames, config text and the systemd unit files `stewardctl import` reads, FUZZ_TIME seconds
# each (default 30; FUZZ_TARGETS=unit_file for one), starting from the seeds in
# fuzz/seeds. cargo-fuzz is installed if missing; it needs nightly features, from the nightly
# toolchain when there is one, else from the stable one (RUSTC_BOOTSTRAP).
FUZZ_TIME ?= 30
FUZZ_TARGETS ?= spawn_state manager_state control_request config unit_file notify
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@set -e; \
	if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=+nightly; else tc=; export RUSTC_BOOTSTRAP=1; fi; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; cp -n fuzz/seeds/$$t/* fuzz/corpus/$$t/ 2>/dev/null || true; \
		echo "fuzz: $$t for $(FUZZ_TIME)s"; \
		(cd fuzz && cargo $$tc fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_TIME) -print_final_stats=1); \
	done

# The chaos test for a full minute (make test runs it for 8 s): random SIGKILLs of services,
# instances and executors in flight, control bursts and a log flood, under client load.
chaos: build
	STEWARD_CHAOS_SECS=60 $(CARGO) test -p steward-integration-tests --test chaos -- --nocapture

# The functions the manager runs once it has started go first in its code (the list is
# manager/hot-functions.txt, written by `make hot-functions`): after start-up it drops its code
# pages, and the kernel maps code back 64 KiB around each fault, so the loop's few hundred
# functions then fill a few such windows instead of most of the binary. The manager's linker
# (manager/link-hot-first) is cc with the list in lld's terms; with another linker than lld
# (rustc's on x86_64 Linux since 1.90), the manager is linked as it comes.
MANAGER_LINK := -C linker=$(CURDIR)/manager/link-hot-first

# The release binaries the benchmarks measure, the tiny static service they run, and the C
# floor experiments the benchmarks set beside them (bench/floor/).
release:
	$(CARGO) build --release --workspace --exclude steward-executor --exclude steward --bins
	$(CARGO) rustc --release -p steward --bin steward -- $(MANAGER_LINK)
	$(CARGO) rustc --release -p steward-executor --bin steward-executor -- $(EXECUTOR_FLAGS)
	gcc -static -nostdlib -O2 -fno-stack-protector -o target/release/steward-tiny bench/tiny/tiny.c
	gcc -O2 -Wall -o target/release/steward-floor bench/floor/floor.c
	gcc -static -nostdlib -O2 -fno-stack-protector -o target/release/steward-floor-stub bench/floor/stub.c
	gcc -O2 -Wall -o target/release/steward-floor-store bench/floor/store.c

# Rewrites manager/hot-functions.txt from a profile of the manager at work (bench/hot-functions).
hot-functions: release
	bench/hot-functions

# Installing. `make install` (PREFIX=/usr/local, DESTDIR for staging) puts the release builds,
# the man pages, the shell completions and the example config in place; an installed
# PREFIX/sbin/steward finds PREFIX/libexec/steward-executor by itself. `make uninstall` removes
# those files (and share/doc/steward), nothing else. The man pages are scdoc (docs/man/*.scd);
# their lists of config keys and commands are generated from the code by
# `STEWARD_WRITE_MAN=1 cargo test man_page`, which `make test` checks.
PREFIX ?= /usr/local
MAN := target/man
MAN_PAGES := $(MAN)/steward.8 $(MAN)/stewardctl.1 $(MAN)/steward.toml.5
# The man pages' and the package's date: the last commit's, so a rebuild makes the same files.
DATE_EPOCH = $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),$(shell date +%s))
# source:destination under PREFIX:mode
INSTALL_FILES := \
	target/release/steward:sbin/steward:755 \
	target/release/stewardctl:bin/stewardctl:755 \
	target/release/steward-executor:libexec/steward-executor:755 \
	$(MAN)/steward.8:share/man/man8/steward.8:644 \
	$(MAN)/stewardctl.1:share/man/man1/stewardctl.1:644 \
	$(MAN)/steward.toml.5:share/man/man5/steward.toml.5:644 \
	packaging/completions/stewardctl.bash:share/bash-completion/completions/stewardctl:644 \
	packaging/completions/_stewardctl:share/zsh/vendor-completions/_stewardctl:644 \
	packaging/completions/stewardctl.fish:share/fish/vendor_completions.d/stewardctl.fish:644 \
	examples/steward.toml:share/doc/steward/steward.toml:644

.PHONY: man install uninstall deb deb-path deb-check

man: $(MAN_PAGES)

$(MAN)/%: docs/man/%.scd
	@packaging/need "make man" scdoc:scdoc
	@mkdir -p $(MAN)
	SOURCE_DATE_EPOCH=$(DATE_EPOCH) scdoc < $< > $@

install: release man
	@set -e; for f in $(INSTALL_FILES); do \
		src=$${f%%:*}; rest=$${f#*:}; dest="$(DESTDIR)$(PREFIX)/$${rest%:*}"; \
		install -D -m $${rest##*:} "$$src" "$$dest"; echo "installed $$dest"; \
	done

uninstall:
	@for f in $(INSTALL_FILES); do \
		rest=$${f#*:}; dest="$(DESTDIR)$(PREFIX)/$${rest%:*}"; \
		if [ -e "$$dest" ]; then rm -f "$$dest" && echo "removed $$dest"; fi; \
	done
	@rmdir "$(DESTDIR)$(PREFIX)/share/doc/steward" 2>/dev/null || true

# A Debian package of the release build, installing into /usr (packaging/build-deb): it does
# not take over /sbin/init; boot with init=/usr/sbin/steward. Checked with lintian.
DEB_REVISION ?= 1
DEB_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)-$(DEB_REVISION)
DEB_ARCH = $(shell dpkg --print-architecture 2>/dev/null)
DEB = target/deb/steward_$(DEB_VERSION)_$(DEB_ARCH).deb

deb: release man
	SOURCE_DATE_EPOCH=$(DATE_EPOCH) packaging/build-deb $(DEB_VERSION) $(DEB)

deb-path:
	@echo $(DEB)

# As root: builds the package, installs it on this machine, checks the man pages, the bash
# completion against a running steward, then removes it and checks every file is gone.
deb-check:
	packaging/check-deb

# Benchmarks against the release binaries and their peers (installed from Debian if missing);
# the report and plots go to target/bench/. BENCH_ARGS=--quick for a smoke run.
bench: release
	bench/install-peers
	$(CARGO) bench -p steward-protocol --bench codec -- --warm-up-time 1 --measurement-time 2
	target/release/steward-bench --bin-dir target/release --out target/bench $(BENCH_ARGS)

# The second clippy checks the executor as `make build` builds it, without libc; the first sees
# the std program a plain cargo build makes of the same code.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p steward-executor --bin steward-executor -- -D warnings $(EXECUTOR_FLAGS)

clean:
	$(CARGO) clean
