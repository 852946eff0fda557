# statesync — build, test and demo targets. Needs only Go; `make proto` also
# installs the protobuf tools it uses, `make lint` staticcheck.
GO      ?= go
PKGS    ?= ./...
TIMEOUT ?= 9m

.PHONY: all demo test prepare-cosmos test-cosmos demo-cosmos bench-cosmos lint vet fmt staticcheck proto bench bench-go fuzz reliability reliability-crash reliability-attacks reliability-serving reliability-fuzz

all: lint test

## demo: start a local CometBFT network and state-sync a fresh node into it;
## flags in ARGS (make demo ARGS='-size 64 -plain'; ARGS=-h lists them)
ARGS ?=
demo:
	@echo "make demo: building cmd/demo into bin/ (the first build compiles CometBFT: a few minutes)"
	@bash -c 'set -o pipefail; $(GO) build -v -o bin/demo ./cmd/demo 2>&1 | awk '"'"'/^[A-Za-z0-9_.\/-]+$$/ {n++; printf "\r  %d packages compiled", n; fflush(); next} {print} END {if (n) print ""}'"'"''
	@bin/demo $(ARGS)

## test: every package with the race detector (goroutine leaks fail tests),
## then the cosmos module's. Meanwhile, at the lowest CPU priority, the
## cosmos module is prepared (downloaded, vetted, its binaries compiled) so
## that its compile fills the CPU the root tests leave idle waiting on
## timers; test-cosmos then finds its build cached. The preparation's output
## is dropped: test-cosmos runs the same steps and reports their failures.
NICE := $(shell command -v nice >/dev/null 2>&1 && echo nice -n 19)
test:
	@$(MAKE) --no-print-directory prepare-cosmos >/dev/null 2>&1 & prep=$$!; \
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS); rc=$$?; \
	[ $$rc -eq 0 ] || echo "make test: waiting for the cosmos preparation to end"; \
	wait $$prep; exit $$rc
	$(MAKE) test-cosmos

# prepare-cosmos: what test-cosmos compiles, compiled ahead (see test). The
# e2e run with no test builds the node binaries in its TestMain.
prepare-cosmos:
	-cd cosmos && $(NICE) $(GO) vet ./...
	-cd cosmos && $(NICE) $(GO) test -race -count=1 -run '^$$' ./e2e

## test-cosmos: the cosmos module (its own go.mod, Cosmos SDK v0.55): vet
## everything, then the e2e tests (a real SDK network of child processes).
## Only ./e2e is run with -race: it imports only the standard library,
## internal/sdknet and goleak, so the SDK and CometBFT are compiled once,
## without -race, for vet and the node binaries (exampled, hostiled, built
## once by the test's TestMain and shared by every case); `go test -race`
## on the SDK packages would compile the SDK a second time for no test.
test-cosmos:
	cd cosmos && $(GO) vet ./... && $(GO) test -race -count=1 -timeout $(TIMEOUT) ./e2e

## demo-cosmos: a 3-validator Cosmos SDK v0.55 example chain on loopback; a
## fresh SDK node joins it through the library with a live progress display,
## then its balances and app hash are checked against a validator's
demo-cosmos:
	cd cosmos && $(GO) run ./example/demo $(DEMOFLAGS)

## lint: go vet, gofmt and staticcheck (all must report nothing). staticcheck
## is pinned and run with go run, which fetches and builds it on first use.
STATICCHECK_VERSION ?= v0.8.2
lint: vet fmt staticcheck

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: ours against CometBFT v0.40's built-in reactor from the same peers at
## 2/4/8 peers, 1 and 10 MB chunks, default rate limits and lifted; a 1 GiB
## restore's peak heap; backfill blocks/s at 0 and 50 ms round trip. Prints the
## BENCHMARKS.md tables (about 5 minutes on 2 cores; BENCHFLAGS=-quick for a
## short check).
bench:
	$(GO) run ./cmd/bench -md $(BENCHFLAGS)
	$(MAKE) bench-cosmos

## bench-cosmos: a Cosmos SDK v0.55 IAVL snapshot (111 MB) restored from 4
## peers at CometBFT's default link rate, ours against the SDK's stock start
## (CometBFT's built-in state sync), each with its reactor's defaults, for
## the default app.toml and iavl-disable-fastnode=true (both sides), 2 runs
## each; split into start-up, discovery and restore (fetch and apply), with
## CPU times (about 20 minutes on 2 cores, most of it the 400 000-coin
## genesis; BENCHCOSMOSFLAGS='-denoms=20000 -runs=1' for a short check)
bench-cosmos:
	cd cosmos && $(GO) run ./bench $(BENCHCOSMOSFLAGS)

## bench-go: the per-part Go benchmarks of the root package
bench-go:
	$(GO) test -run '^$$' -bench 'BenchmarkRestore|BenchmarkCompare|BenchmarkBackfill|BenchmarkRestoreMemory' -benchtime 1x -timeout 60m . $(BENCHFLAGS)

## reliability-crash: the crash matrix (internal/crashtest): a node on
## goleveldb killed (SIGKILL) or stopped at every phase and restarted; prints
## the markdown table of phases and outcomes on stdout (about a minute)
reliability-crash:
	@f=$$(mktemp); \
	if CRASHTEST_TABLE=$$f $(GO) test -count=1 -timeout 5m -run '^TestCrashMatrix$$' ./internal/crashtest >$$f.log 2>&1; then \
		cat $$f; rm -f $$f $$f.log; \
	else cat $$f.log >&2; cat $$f 2>/dev/null; rm -f $$f $$f.log; exit 1; fi

## fuzz: fuzz the wire decoder and validators, the params quorum, the block
## queue, the chunk fetch scheduler, the dispatcher, backfill verification,
## the syncer's inbox and pool, and a whole Sync over an in-memory router,
## one after the other (the fastest first), each for FUZZTIME (default 20s;
## e.g. FUZZTIME=10m, or FUZZTIME=10000000x for a number of executions per
## target) with FUZZPARALLEL workers (default: one per core). Seeds:
## testdata/fuzz and proto/testdata/fuzz. FUZZMINIMIZETIME (default 500x)
## bounds the executions spent minimizing each new input: with the engine's
## default (60s) the workers spend most of a short run minimizing, not
## fuzzing; a failing input is written minimized within that bound
## (FUZZMINIMIZETIME=60s for a smaller one). Each target's run is
## appended to testdata/fuzz-counts.tsv (executions, time, result, commit),
## from which make reliability prints the latest per target. The engine instruments every
## package a test binary links, and its per-execution bookkeeping grows
## with that: in the root package (CometBFT and the test-only dependencies)
## even an empty target runs only about 1.5k executions/s per worker on 2
## loaded cores, so 10 million executions of one target take from about 45
## minutes (FuzzParamsQuorum) to 2 hours (FuzzFetchScheduler) with 2
## workers. FuzzSyncOverRouter runs a whole Sync per execution with real
## timeouts, so its workers mostly wait: it gets FUZZSYNCPARALLEL workers
## (default 12: 11,384 executions in a 60 s run on 2 cores against 3,176
## with 2 workers, 2026-12-06), and at about 10 ms of CPU per execution
## 10 million take some 15 hours of both cores.
FUZZTIME ?= 20s
FUZZPARALLEL ?=
FUZZSYNCPARALLEL ?= 12
FUZZMINIMIZETIME ?= 500x
FUZZFLAGS = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(if $(FUZZPARALLEL),-parallel $(FUZZPARALLEL))
FUZZ_PROTO_TARGETS ?= FuzzDecodeValidate
FUZZ_TARGETS ?= FuzzParamsQuorum FuzzBlockQueue FuzzFetchScheduler FuzzDispatcher FuzzBackfillVerify FuzzSyncerInbox FuzzSyncOverRouter
fuzz:
	@set -e; for t in $(FUZZ_PROTO_TARGETS); do \
		echo "== $$t (./proto)"; \
		GO=$(GO) scripts/fuzz.sh ./proto $$t $(FUZZFLAGS); \
	done
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $$t"; \
		par=; [ $$t = FuzzSyncOverRouter ] && [ -z "$(FUZZPARALLEL)" ] && par="-parallel $(FUZZSYNCPARALLEL)"; \
		GO=$(GO) scripts/fuzz.sh . $$t $(FUZZFLAGS) $$par; \
	done

## reliability-attacks: every attacker scenario (withholder, pinger, snapshot
## flooder, churner, forger, provider liars, params forger, backfill priority
## forger, slow reader, request flooder) against honest peers alone and with
## the attacker; prints RELIABILITY.md's markdown table on stdout (test logs
## on stderr). The same scenarios run bounded in make test.
reliability-attacks:
	@out=$$(mktemp); \
	$(GO) test -count=1 -timeout 30m -run '^TestReliabilityAttacks$$' . -args -reliability -reliability.out $$out >&2 \
		&& cat $$out; status=$$?; rm -f $$out; exit $$status

## reliability: regenerate RELIABILITY.md (the attacker table, then the crash
## matrix), each produced by its own target below
## reliability-fuzz: the latest make fuzz run of each target, from
## testdata/fuzz-counts.tsv, against issue 10's 10 million executions
reliability-fuzz:
	@echo 'From `make fuzz` (each target run by `scripts/fuzz.sh`, which appends to `testdata/fuzz-counts.tsv`; e.g. `make fuzz FUZZTIME=10000000x FUZZ_TARGETS=FuzzDispatcher`). The latest run of each target; target: 10 million executions without a failure.'; echo; \
	echo '| target | package | executions | elapsed | workers | result | when (UTC) | commit | 10 M without a failure? |'; \
	echo '|---|---|---|---|---|---|---|---|---|'; \
	touch testdata/fuzz-counts.tsv; \
	awk -F'\t' -v want="$(FUZZ_PROTO_TARGETS) $(FUZZ_TARGETS)" '{last[$$2]=$$0} END {n=split(want, t, " "); for (i=1;i<=n;i++) {if (!(t[i] in last)) {printf "| %s | | | | | not run | | | no |\n", t[i]; continue}; split(last[t[i]], f, "\t"); ok=(f[7]=="PASS" && f[4]>=10000000)?"yes":"no"; printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", f[2], f[3], f[4], f[5], f[6], f[7], f[1], f[8], ok}}' testdata/fuzz-counts.tsv

## reliability-serving: the serving latency of issue 10 (cmd/bench, about
## 6 minutes): another channel's p99 under 16 restoring peers, ours against
## the built-in reactor, 8 interleaved rounds each
reliability-serving:
	@$(GO) run ./cmd/bench -only serving -serving-load restore -serving-rounds 8 -md | sed -e '/^# /d' -e 's/^## /### /'

reliability:
	@{ echo '# RELIABILITY'; echo; \
	  echo 'Generated by `make reliability` ('"$$(date -u +%Y-%m-%d)"', '"$$(nproc)"' cores, load average '"$$(cut -d' ' -f1 /proc/loadavg)"' at the start); do not edit by hand.'; echo; \
	  echo '## Hostile peers (`make reliability-attacks`)'; echo; \
	  $(MAKE) -s reliability-attacks; echo; \
	  echo '## Crash matrix (`make reliability-crash`)'; echo; \
	  $(MAKE) -s reliability-crash; echo; \
	  echo '## Serving under load (`make reliability-serving`)'; echo; \
	  echo 'Command: `go run ./cmd/bench -only serving -serving-load restore -serving-rounds 8 -md`. Target: the p99 at or below the built-in reactor'"'"'s, for the idle and for the syncing peer.'; echo; \
	  $(MAKE) -s reliability-serving; echo; \
	  echo '## Fuzzing (`make reliability-fuzz`)'; echo; \
	  $(MAKE) -s reliability-fuzz; } > RELIABILITY.md.tmp && cat -s RELIABILITY.md.tmp > RELIABILITY.md && rm RELIABILITY.md.tmp

-include Makefile.proto
