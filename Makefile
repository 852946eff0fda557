# statesync — build, test and demo targets. Needs only Go; `make proto` also
# installs the protobuf tools it uses.
GO      ?= go
PKGS    ?= ./...
TIMEOUT ?= 9m

.PHONY: all demo test lint vet fmt proto bench bench-go fuzz reliability reliability-crash reliability-attacks

all: lint test

## demo: start a local CometBFT network and state-sync a fresh node into it
demo:
	$(GO) run ./cmd/demo

## test: every package with the race detector (goroutine leaks fail tests)
test:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

## lint: go vet and gofmt
lint: vet fmt

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
	$(GO) run ./bench -md $(BENCHFLAGS)

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

## fuzz: fuzz the wire decoder and validators, the syncer's inbox and pool,
## the block queue, the dispatcher, backfill verification and the params
## quorum, each for FUZZTIME (default 20s; e.g. FUZZTIME=10m, or 10000000x
## for a number of executions). Seeds: testdata/fuzz and proto/testdata/fuzz.
FUZZTIME ?= 20s
FUZZ_TARGETS ?= FuzzSyncerInbox FuzzBlockQueue FuzzDispatcher FuzzBackfillVerify FuzzParamsQuorum
fuzz:
	$(GO) test ./proto -run '^$$' -fuzz '^FuzzDecodeValidate$$' -fuzztime $(FUZZTIME)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $$t"; \
		$(GO) test . -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME); \
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

-include Makefile.proto
