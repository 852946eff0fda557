// Package sdknet runs the example chain as child processes on loopback:
// genesis the SDK way (init, keys, add-genesis-account, gentx,
// collect-gentxs), validators under this library's start handler, nodes
// joining them, and the checks that compare a node's state with the
// chain's over CometBFT's RPC and the SDK's gRPC. It imports no SDK code.
// The e2e tests and the demo use it.
package sdknet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// T is what the harness needs from its caller: *testing.T, or the demo's
// runner. Fatalf must not return.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// The binaries, set by Build.
var (
	Exampled string // the example chain: start = ours, start-stock = the SDK's
	Hostiled string // the example chain with a hostile app (e2e/internal/hostiled)
)

// Build builds the binaries into dir, from the cosmos module's directory
// moduleDir, in one go build (one load of the package graph, the two links
// in parallel). Without -race: the nodes are the system under test, and the
// SDK compiled for go vet is reused as it is.
func Build(moduleDir, dir string) error {
	Exampled = filepath.Join(dir, "exampled")
	Hostiled = filepath.Join(dir, "hostiled")
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./example/exampled", "./e2e/internal/hostiled")
	cmd.Dir = moduleDir
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the node binaries: %w\n%s", err, out)
	}
	return nil
}
