package statesync

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// CometBFT v0.40's built-in reactor (used by the interop tests and
		// the comparison benchmark) leaves its chunk fetchers sleeping up to
		// 2 s after its Sync returns; they exit on their own. Ours are
		// never ignored.
		goleak.IgnoreAnyFunction("github.com/cometbft/cometbft/statesync.(*syncer).fetchChunks"),
	)
}
