package node

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/libs/service"
	"github.com/stretchr/testify/require"
)

// TestStopNoise: the errors CometBFT logs when a node stops before leaving
// state sync go to debug level (through With too); other errors pass.
func TestStopNoise(t *testing.T) {
	var buf bytes.Buffer
	l := stopNoise{log.NewFilter(log.NewTMLogger(&buf), log.AllowInfo())}.With("module", "consensus")
	l.Error("Not stopping State service -- has not been started yet", "impl", "ConsensusState")
	l.Error("Error stopping consensus state", "err", service.ErrNotStarted)
	l.Error("Stopped accept routine, as transport is closed", "numPeers", 0)
	require.Empty(t, buf.String())

	l.Error("Error stopping consensus state", "err", errors.New("disk full"))
	l.Error("Stopping the node", "err", "state sync failed")
	require.Contains(t, buf.String(), "disk full")
	require.Contains(t, buf.String(), "Stopping the node")
}
