package statesync

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakDeadline bounds how long goroutines may take to end after the tests.
// CometBFT's MConnection receive routine of a stopped connection can sit in
// its rate limiter (libs/flowrate) for seconds after a large transfer
// before it sees the closed connection; goleak's own retries (about 2 s)
// are too short for the full-size attacker scenarios.
const leakDeadline = 15 * time.Second

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		opts := []goleak.Option{
			// CometBFT v0.40's built-in reactor (used by the interop tests
			// and the comparison benchmark) leaves its chunk fetchers
			// sleeping up to 2 s after its Sync returns; they exit on their
			// own. Ours are never ignored.
			goleak.IgnoreAnyFunction("github.com/cometbft/cometbft/statesync.(*syncer).fetchChunks"),
		}
		deadline := time.Now().Add(leakDeadline)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: goroutines still running %v after the tests: %v\n", leakDeadline, err)
				code = 1
				break
			}
			time.Sleep(100 * time.Millisecond) // polling for goroutines to exit: there is no event to wait on
		}
	}
	os.Exit(code)
}
