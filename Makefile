# statesync — build, test and demo targets. Needs only Go; `make proto` also
# installs the protobuf tools it uses.
GO      ?= go
PKGS    ?= ./...
TIMEOUT ?= 9m

.PHONY: all demo test test-cosmos demo-cosmos bench-cosmos lint vet fmt proto bench bench-go fuzz

all: lint test

## demo: start a local CometBFT network and state-sync a fresh node into it
demo:
	$(GO) run ./cmd/demo

## test: every package with the race detector (goroutine leaks fail tests),
## then the cosmos module's
test:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)
	$(MAKE) test-cosmos

## test-cosmos: the cosmos module (its own go.mod, Cosmos SDK v0.55): vet
## everything, then the e2e tests (a real SDK network of child processes).
## Only ./e2e is run with -race: it imports no SDK code, so the SDK is
## compiled once, without -race, for vet and the node binaries; `go test
## -race` on the SDK packages would compile the SDK a second time for no
## test. The nodes under test are separate processes.
test-cosmos:
	cd cosmos && $(GO) vet ./... && $(GO) test -race -count=1 -timeout $(TIMEOUT) ./e2e

## demo-cosmos: a 3-validator Cosmos SDK v0.55 example chain on loopback; a
## fresh SDK node joins it through the library with a live progress display,
## then its balances and app hash are checked against a validator's
demo-cosmos:
	cd cosmos && $(GO) run ./example/demo $(DEMOFLAGS)

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
	$(MAKE) bench-cosmos

## bench-cosmos: a Cosmos SDK v0.55 IAVL snapshot (over 100 MB) restored from
## 4 peers at CometBFT's default link rate, ours against the SDK's stock start
## (CometBFT's built-in state sync), with ours split into fetch and apply
## (about 10-15 minutes on 2 cores; BENCHCOSMOSFLAGS=-denoms=20000 for a
## short check)
bench-cosmos:
	cd cosmos && $(GO) run ./bench $(BENCHCOSMOSFLAGS)

## bench-go: the per-part Go benchmarks of the root package
bench-go:
	$(GO) test -run '^$$' -bench 'BenchmarkRestore|BenchmarkCompare|BenchmarkBackfill|BenchmarkRestoreMemory' -benchtime 1x -timeout 60m . $(BENCHFLAGS)

## fuzz: fuzz the wire decoder and validators for a while
fuzz:
	$(GO) test ./proto -run '^$$' -fuzz FuzzDecodeValidate -fuzztime 60s

-include Makefile.proto
