package localnet

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
)

func TestMain(m *testing.M) {
	VerifyTestMain(m)
}

func TestNetworkProducesBlocksAndSnapshots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net, err := Start(ctx, Options{
		Validators: 2, FullNodes: 1,
		App: kvapp.Options{Keys: 100, ValueSize: 100, SnapshotInterval: 5},
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, net.Stop()) }()
	require.NoError(t, net.WaitHeight(ctx, 6))
	full := net.Nodes[2]
	require.NoError(t, WaitFor(ctx, func() bool { return full.Height() >= 6 }, "the full node to follow"))
	for _, m := range net.Nodes {
		require.NotNil(t, m.App.Snapshot(5), m.Name)
	}
	// Every node runs our state sync (which advertises 0x62 and 0x63).
	for _, m := range net.Nodes {
		require.NotNil(t, m.Node(), m.Name)
		require.False(t, m.Node().StateSyncing(), m.Name)
	}
}
