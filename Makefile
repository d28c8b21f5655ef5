# authcache — one plain Makefile.
#
#   make                 build everything into build/
#   make test            deps, build, then every unit, integration and short fuzz test (tests/run)
#   make demo            deps, build, then walk a session through the cache (tests/demo.sh)
#   make deps            install the Debian packages named in deps.txt that are missing
#   make fuzz            libFuzzer targets, FUZZ_SECONDS each (default 600)
#   make bench-shm       the shm table benchmark; writes bench/RESULTS.md
#   make bench           deps, build, then bench/run: every contender under every scenario (~10 min;
#                        BENCH_QUICK=1 ~1 min); writes bench/RESULTS.md and bench/results.png
#   make SANITIZER=address,undefined   (or thread) builds into build/san-<name>/
#   make SANITIZER=thread tsan           what `make test` runs under ThreadSanitizer (TSAN_UNIT, daemon)
#   make format / format-check           clang-format every C file / check it is (part of make test)
#   V=1                  show the commands
#
# Files are found by folder: shm/*.c and client/authcache*.c make the client library, daemon/*.c the
# daemon (daemon/main.c holds main), tests/unit/test_*.c one program each, tests/fuzz/fuzz_*.c one
# libFuzzer target each, bench/*.c one program each, tests/idp/*.c the test IdP.

CC      ?= cc
CFLAGS  ?= -O2 -g
override CFLAGS += -std=gnu11 -pthread -D_GNU_SOURCE -fno-strict-aliasing \
	-Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Werror \
	-Ishm -Iclient -Idaemon -MMD -MP
LDLIBS  := -lssl -lcrypto -lxxhash -lpthread

SANITIZER ?=
ifeq ($(SANITIZER),)
BUILD   ?= build
else
BUILD   ?= build/san-$(subst $(comma),-,$(SANITIZER))
override CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SANITIZER)
endif
comma := ,

ifeq ($(V),1)
Q :=
else
Q := @
endif

SHM_SRC    := $(wildcard shm/*.c)
CLI_SRC    := client/cli.c client/top.c
CLIENT_SRC := $(filter-out $(CLI_SRC),$(wildcard client/*.c))
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
IDP_SRC    := $(wildcard tests/idp/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
BENCH_SRC  := $(wildcard bench/*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
SHM_OBJ    := $(call obj,$(SHM_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
IDP_OBJ    := $(call obj,$(IDP_SRC))
LIB_OBJ    := $(SHM_OBJ) $(CLIENT_OBJ)

UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_BIN  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

DAEMON_LIBS := -luring -ljwt -ljemalloc $(LDLIBS)

ALL := $(BUILD)/libauthcache.a $(BUILD)/libauthcache.so $(UNIT_BIN) $(BENCH_BIN)
ifneq ($(wildcard daemon/main.c),)
ALL += $(BUILD)/authcached
endif
ifneq ($(wildcard client/cli.c),)
ALL += $(BUILD)/authcache
endif
ifneq ($(IDP_SRC),)
ALL += $(BUILD)/test-idp
endif
ALL += $(BUILD)/differential

.PHONY: all test demo deps fuzz fuzz-build tsan bench bench-shm clean format format-check differential
.SECONDARY:
all: $(ALL)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -fPIC -c -o $@ $<

$(BUILD)/libauthcache.a: $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

# Only the API (authcache_*) is exported: client/libauthcache.map.
$(BUILD)/libauthcache.so: $(LIB_OBJ) client/libauthcache.map
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,-z,defs -Wl,-soname,libauthcache.so \
		-Wl,--version-script=client/libauthcache.map -o $@ $(LIB_OBJ) $(LDLIBS)

$(BUILD)/libdaemon.a: $(DAEMON_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/authcached: $(BUILD)/obj/daemon/main.o $(BUILD)/libdaemon.a $(BUILD)/libauthcache.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

$(BUILD)/authcache: $(call obj,$(CLI_SRC)) $(BUILD)/libauthcache.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test-idp: $(IDP_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -ljwt $(LDLIBS)

# The differential test's driver (tests/diff/differential.c): plain libc and pthreads.
$(BUILD)/differential: $(BUILD)/obj/tests/diff/differential.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lpthread

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libdaemon.a $(BUILD)/libauthcache.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libdaemon.a $(BUILD)/libauthcache.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)

# libFuzzer targets: clang-14, ASan+UBSan, the module sources compiled in directly.
FUZZ_CC     ?= clang-14
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -pthread -Ishm -Iclient -Idaemon \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz-build: $(FUZZ_BIN)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(SHM_SRC) $(DAEMON_SRC)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(SHM_SRC) $(DAEMON_SRC) -luring -ljwt $(LDLIBS)

FUZZ_SECONDS ?= 600
fuzz: fuzz-build
	tests/fuzz/run $(FUZZ_SECONDS) $(FUZZ_BIN)

deps:
	@missing=$$(grep -v '^#' deps.txt | grep . | while read p; do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to install $$missing" >&2; exit 2; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Under ThreadSanitizer: the threaded shm tests (one mapping shared by threads, so TSan sees every
# access; tests/tsan.supp says what is suppressed and why) and the daemon, which tests/run drives with
# test_daemon.py. -Wno-tsan: GCC warns that TSan does not model atomic_thread_fence (see tsan.supp).
TSAN_UNIT := test_shm test_shm_threads test_client test_epoch test_breaker test_flight test_sids
tsan: $(addprefix $(BUILD)/tests/,$(TSAN_UNIT)) $(BUILD)/authcached

test: deps
	$(MAKE) all
	$(MAKE) SANITIZER=address,undefined all
	rm -rf build/san-thread/tests
	$(MAKE) SANITIZER=thread CFLAGS="-O2 -g -Wno-tsan" tsan
	$(MAKE) fuzz-build
	tests/run

# The differential test's long run: DIFF_REQUESTS checks per preset (a preset the test IdP cannot
# play is skipped), each compared with the IdP's own answer (docs/reliability.md). DIFF_SEED
# replays a run; DIFF_IDP_BIN picks another test IdP.
DIFF_REQUESTS ?= 10000000
DIFF_IDP_BIN ?= $(BUILD)/test-idp
DIFF_SEED ?=
differential: $(BUILD)/differential $(BUILD)/authcached $(BUILD)/test-idp
	@for p in authentik oauth2-proxy authelia; do \
		$(BUILD)/differential --preset $$p --requests $(DIFF_REQUESTS) \
			--idp-bin $(DIFF_IDP_BIN) --authcached-bin $(BUILD)/authcached \
			$(if $(DIFF_SEED),--seed $(DIFF_SEED)) --verbose; \
		rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 77 ] || exit $$rc; \
	done

demo: deps all
	tests/demo.sh

bench-shm: $(BUILD)/bench/bench_shm
	$(BUILD)/bench/bench_shm | tee build/bench_shm.txt
	bench/record shm build/bench_shm.txt

bench: deps
	$(MAKE) all
	bench/run

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# Every tracked C file as clang-format (.clang-format) writes it; tests/run runs this as a test.
format-check:
	@bad=$$(for f in $$(git ls-files '*.c' '*.h'); do \
		clang-format --dry-run -Werror "$$f" >/dev/null 2>&1 || echo "$$f"; done); \
	if [ -n "$$bad" ]; then echo "not clang-format clean (run make format):" $$bad >&2; exit 1; fi; \
	echo "every C file is clang-format clean"

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# install / uninstall: PREFIX (default /usr/local) and DESTDIR, as packagers expect.
PREFIX  ?= /usr/local
VERSION ?= 0.1.0
.PHONY: install uninstall
install: $(BUILD)/libauthcache.a $(BUILD)/libauthcache.so $(BUILD)/authcached $(BUILD)/authcache
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/authcached $(BUILD)/authcache $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libauthcache.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libauthcache.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 client/authcache.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' client/authcache.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/authcache.pc
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/authcached $(DESTDIR)$(PREFIX)/bin/authcache \
		$(DESTDIR)$(PREFIX)/lib/libauthcache.a $(DESTDIR)$(PREFIX)/lib/libauthcache.so \
		$(DESTDIR)$(PREFIX)/include/authcache.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/authcache.pc

# image: the authcached OCI image built offline from Debian's archive (deploy/image/build.sh).
.PHONY: image
image: $(BUILD)/authcached $(BUILD)/authcache
	BUILD=$(BUILD) deploy/image/build.sh
