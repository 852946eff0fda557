package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// Binaries built by TestMain.
var (
	exampledBin string // the example chain (start = ours, start-stock = the SDK's)
	hostiledBin string // the example chain with a hostile app (see internal/hostiled)
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "statesync-cosmos-e2e-bin")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	exampledBin = filepath.Join(dir, "exampled")
	hostiledBin = filepath.Join(dir, "hostiled")
	for bin, pkg := range map[string]string{exampledBin: "../example/exampled", hostiledBin: "./internal/hostiled"} {
		// Without -race: the nodes are the system under test, not this
		// process; the race detector runs on the test's own code.
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("building %s: %w\n%s", pkg, err, out)
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			return 1, fmt.Errorf("leaked goroutines: %w", err)
		}
	}
	return code, nil
}
