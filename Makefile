# oauthq — plain GNU make. Binaries in build/, objects in build/obj/.
#
#   make            build every binary (default)
#   make test       checks, unit + integration tests (real Kafka), then again
#                   under ASan+UBSan, the intake's under TSan: everything CI runs
#   make unit / integration   one part, normal build only
#   make run        the full local stack (Kafka, simulator, worker, intake)
#   make bench      benchmarks
#   make asan       unit + integration tests built with ASan+UBSan
#   make tsan       the intake's integration tests built with ThreadSanitizer
#   make fmt / fmt-check / lint / clean / setup
#
# Layout: every common/*.c goes into build/libcommon.a; producer/, worker/,
# webhooks/ and tests/sim/ objects (except each main.c) into their own archives, so
# unit tests link the same objects the binaries use. Tests are one program
# per file: tests/unit/test_X.c -> build/tests/unit_X, tests/integration/
# test_X.c -> build/tests/itest_X (linked with tests/support/*.c).

SHELL := /bin/bash
BUILD ?= build
CC ?= cc
ifeq ($(origin CC),default)
CC := cc
endif

PKGS := rdkafka libcurl libcjson sqlite3 libmicrohttpd openssl
CPPFLAGS += -I. -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
          -fno-strict-aliasing -pthread
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lrdkafka -lcurl -lcjson -lsqlite3 -lmicrohttpd -lssl -lcrypto) -lpthread -lm
TEST_LDLIBS := -lcmocka

COMMON_SRC := $(sort $(wildcard common/*.c))
SIM_SRC := $(filter-out tests/sim/main.c,$(sort $(wildcard tests/sim/*.c)))
INTAKE_SRC := $(filter-out producer/main.c,$(sort $(wildcard producer/*.c)))
ASSET_FILES := $(sort $(wildcard producer/static/*))
WORKER_SRC := $(filter-out worker/main.c,$(sort $(wildcard worker/*.c)))
CTL_SRC := $(filter-out ctl/main.c,$(sort $(wildcard ctl/*.c)))
WEBHOOKS_SRC := $(filter-out webhooks/main.c,$(sort $(wildcard webhooks/*.c)))
SUPPORT_SRC := $(sort $(wildcard tests/support/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
ITEST_SRC := $(sort $(wildcard tests/integration/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
BENCH_LIB_SRC := $(filter-out bench/bench-%.c,$(sort $(wildcard bench/*.c)))
BENCH_SRC := $(sort $(wildcard bench/bench-*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON := $(BUILD)/libcommon.a
LIBSIM := $(BUILD)/libsim.a
LIBINTAKE := $(BUILD)/libintake.a
LIBWORKER := $(BUILD)/libworker.a
LIBCTL := $(BUILD)/libctl.a
LIBWEBHOOKS := $(BUILD)/libwebhooks.a
LIBSUPPORT := $(BUILD)/libsupport.a
LIBBENCH := $(BUILD)/libbench.a
# Order matters for static linking: users before what they use.
APPLIBS := $(LIBINTAKE) $(LIBCTL) $(LIBWEBHOOKS) $(LIBWORKER) $(LIBSIM) $(LIBCOMMON)

BINS := $(BUILD)/oauthq-provider-sim $(BUILD)/oauthq-intake $(BUILD)/oauthq-worker \
        $(BUILD)/oauthqctl $(BUILD)/oauthq-webhooks
UNIT_BINS := $(patsubst tests/unit/test_%.c,$(BUILD)/tests/unit_%,$(UNIT_SRC))
ITEST_BINS := $(patsubst tests/integration/test_%.c,$(BUILD)/tests/itest_%,$(ITEST_SRC))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test unit integration run bench chaos asan tsan tsan-build fmt fmt-check lint clean setup tests fuzz fuzz-build
all: $(BINS) $(BENCH_BINS)
tests: all $(UNIT_BINS) $(ITEST_BINS) $(BUILD)/tests/slow_dr.so $(BUILD)/tests/fail_random.so

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

define archive
$(1): $(call obj,$(2))
	@mkdir -p $$(dir $$@)
	@rm -f $$@
	$$(AR) rcs $$@ $$^
endef
$(eval $(call archive,$(LIBCOMMON),$(COMMON_SRC)))
$(eval $(call archive,$(LIBSIM),$(SIM_SRC)))
# Static files of the intake, embedded as byte arrays (scripts/embed-assets).
$(BUILD)/gen/assets_data.c: $(ASSET_FILES) scripts/embed-assets
	scripts/embed-assets $@ $(ASSET_FILES)
# The SQL of each store, embedded from schemas/: the file there is the one that runs.
$(BUILD)/gen/store_schema.c: schemas/worker-store.sql scripts/embed-assets
	scripts/embed-assets --text $@ store_schema_text $<
$(BUILD)/gen/readmodel_schema.c: schemas/readmodel.sql scripts/embed-assets
	scripts/embed-assets --text $@ readmodel_schema_text $<
$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(LIBINTAKE): $(call obj,$(INTAKE_SRC)) $(BUILD)/obj/gen/assets_data.o \
              $(BUILD)/obj/gen/readmodel_schema.o
	@mkdir -p $(dir $@)
	@rm -f $@
	$(AR) rcs $@ $^
$(LIBWORKER): $(call obj,$(WORKER_SRC)) $(BUILD)/obj/gen/store_schema.o
	@mkdir -p $(dir $@)
	@rm -f $@
	$(AR) rcs $@ $^
$(eval $(call archive,$(LIBCTL),$(CTL_SRC)))
$(eval $(call archive,$(LIBWEBHOOKS),$(WEBHOOKS_SRC)))
$(eval $(call archive,$(LIBSUPPORT),$(SUPPORT_SRC)))
$(eval $(call archive,$(LIBBENCH),$(BENCH_LIB_SRC)))

$(BUILD)/oauthq-provider-sim: $(call obj,tests/sim/main.c) $(APPLIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/oauthq-intake: $(call obj,producer/main.c) $(APPLIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/oauthq-worker: $(call obj,worker/main.c) $(APPLIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/oauthqctl: $(call obj,ctl/main.c) $(APPLIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/oauthq-webhooks: $(call obj,webhooks/main.c) $(APPLIBS)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
# Benchmark tools (SPEC §9, scripts/bench): bench/bench-X.c -> build/bench/bench-X.
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBBENCH) $(APPLIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/tests/unit_%: $(BUILD)/obj/tests/unit/test_%.o $(APPLIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) $(TEST_LDLIBS) -o $@
$(BUILD)/tests/itest_%: $(BUILD)/obj/tests/integration/test_%.o $(LIBSUPPORT) $(APPLIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) $(TEST_LDLIBS) -o $@

# LD_PRELOAD libraries of integration tests (tests/preload/): plain -fPIC,
# never sanitized (they run inside sanitized processes as foreign code).
$(BUILD)/tests/%.so: tests/preload/%.c
	@mkdir -p $(dir $@)
	cc -O1 -g -Wall -Wextra -Werror -shared -fPIC $< -o $@ -ldl

# libFuzzer targets: only meaningful in the fuzz build (see `make fuzz`).
$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(APPLIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@
fuzz-build: $(FUZZ_BINS)

# ---- running -------------------------------------------------------------
setup:
	scripts/setup

unit: all $(UNIT_BINS)
	BUILD=$(BUILD) scripts/run-tests unit

integration: tests
	BUILD=$(BUILD) scripts/run-tests integration

# Everything CI runs: fmt-check, lint, tests, and the tests again under
# ASan+UBSan (scripts/test-all).
test:
	scripts/test-all

run: all
	scripts/run-stack

bench: all
	@scripts/bench

# SPEC §10's chaos run on a local 3-node cluster (CHAOS_S seconds, default
# 120; CHAOS_SEED replays a fault schedule): see scripts/chaos.
chaos: all
	@scripts/chaos

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, in their own
# build tree so the normal binaries stay optimised.
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
asan:
	$(MAKE) BUILD=build/asan CC=clang CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    BUILD=build/asan scripts/run-tests all

# The intake's integration tests under ThreadSanitizer, in their own build
# tree: the intake is the process whose threads share request state (httpd's
# threads, the publisher's delivery thread, the read model's apply thread).
# Only itest_intake and itest_status run (the whole set under TSan would add
# several minutes to `make test`; the worker runs its pipeline on one
# thread), without the broker-stop test (it stops the shared broker and
# exercises no other thread path). Every process writes its reports to
# var/test-logs/tsan.<pid>; any report fails the target. tests/tsan.supp
# holds the suppressions for uninstrumented library internals; every binary
# links tests/tsan/c11_threads.c (librdkafka's C11 threads and locks, which
# clang 14's TSan does not intercept, forwarded to pthreads).
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_ITESTS := itest_intake itest_status
TSAN_SHIM := build/tsan/obj/c11_threads.o
tsan-build:
	@mkdir -p $(dir $(TSAN_SHIM))
	clang $(TSAN_FLAGS) -c tests/tsan/c11_threads.c -o $(TSAN_SHIM)
	$(MAKE) BUILD=build/tsan CC=clang CFLAGS="$(TSAN_FLAGS)" \
	    LDFLAGS="-fsanitize=thread $(CURDIR)/$(TSAN_SHIM)" \
	    all $(addprefix build/tsan/tests/,$(TSAN_ITESTS)) build/tsan/tests/slow_dr.so
tsan: tsan-build
	scripts/run-tsan $(TSAN_ITESTS)

# Every parser of untrusted input under libFuzzer + ASan + UBSan, for
# FUZZ_SECONDS each (default 20), seeded from tests/fuzz/corpus/.
FUZZ_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
fuzz:
	$(MAKE) BUILD=build/fuzz CC=clang CFLAGS="$(FUZZ_FLAGS)" LDFLAGS="-fsanitize=address,undefined" fuzz-build
	scripts/fuzz build/fuzz

# ---- hygiene --------------------------------------------------------------
C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null; git ls-files --others --exclude-standard '*.c' '*.h' 2>/dev/null)
fmt:
	clang-format -i $(C_FILES)
fmt-check:
	clang-format --dry-run --Werror $(C_FILES)
	@echo "fmt-check: $(words $(C_FILES)) files clean"
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --std=c11 --inline-suppr --suppress=missingIncludeSystem \
	    -I. -D__GNUC__ $(C_FILES)
	@echo "lint: cppcheck clean"
	@scripts/check-layers

clean:
	rm -rf $(BUILD) build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
