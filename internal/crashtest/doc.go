// Package crashtest is the crash matrix (its tests only): a node with
// on-disk databases (goleveldb, CometBFT's default backend) state-syncs in
// a child process from a real in-process CometBFT network
// (internal/localnet), is killed with SIGKILL, or stopped gracefully, at
// each phase — discovery, fetching, applying, between the store writes,
// after the handover, during backfill — and restarted in the same home;
// it must reach and follow the chain's tip with the chain's app hash,
// finish its backfill, and leave no chunk spool behind.
//
// `make reliability-crash` runs it and prints the matrix as a markdown
// table (CRASHTEST_TABLE names the file the test writes it to).
package crashtest
