package localnet

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakOptions are the goleak options for test packages that run CometBFT
// nodes: they ignore exactly the goroutines CometBFT v0.40 itself leaks
// for good when a node stops, and nothing else.
//
//   - libs/autofile: the consensus WAL's head file is opened with
//     OpenAutoFile, which starts a SIGHUP handler (OpenAutoFile.func1) and
//     closeFileRoutine; they end only in AutoFile.Close, but the WAL's
//     Group.Close calls the unexported closeFile instead, so both outlive
//     every node (one pair per node that ran consensus or waited for it).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/cometbft/cometbft/libs/autofile.(*AutoFile).closeFileRoutine"),
		goleak.IgnoreTopFunction("github.com/cometbft/cometbft/libs/autofile.OpenAutoFile.func1"),
	}
}

// LeakDeadline bounds how long VerifyTestMain waits for goroutines to end
// after the tests. Some CometBFT goroutines do not watch for Stop and end
// only after their current sleep: blocksync's makeRequestersRoutine sleeps
// up to 3 s (peerConnWait) after its pool starts, consensus's
// queryMaj23Routine several times peer_query_maj23_sleep_duration.
const LeakDeadline = 15 * time.Second

// VerifyTestMain runs the tests, then fails the run if goroutines other
// than LeakOptions' (and extra) remain once LeakDeadline has passed (checking every
// 100 ms, so a clean run costs nothing). LEAKDEBUG=1 (with go test -v)
// prints what is still running at each check.
func VerifyTestMain(m *testing.M, extra ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(LeakDeadline)
		for {
			err := goleak.Find(append(LeakOptions(), extra...)...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: goroutines still running %v after the tests: %v\n", LeakDeadline, err)
				code = 1
				break
			}
			if os.Getenv("LEAKDEBUG") != "" {
				fmt.Fprintf(os.Stderr, "%v: %v\n", time.Now().Format("15:04:05.000"), err)
			}
			time.Sleep(100 * time.Millisecond) // polling for goroutines to exit: there is no event to wait on
		}
	}
	os.Exit(code)
}
