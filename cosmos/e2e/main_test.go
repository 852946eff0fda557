package e2e

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/statesync/statesync/cosmos/internal/sdknet"
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
	if err := sdknet.Build("..", dir); err != nil {
		return 0, err
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			return 1, fmt.Errorf("leaked goroutines: %w", err)
		}
	}
	return code, nil
}
