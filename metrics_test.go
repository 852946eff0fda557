package statesync

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestMetricsCountAndRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "node")
	require.NoError(t, err)
	m.SnapshotDiscovered()
	m.SnapshotDiscovered()
	m.SetSnapshot(100, 4)
	m.ChunkApplied(10 * time.Millisecond)
	m.ChunkApplied(30 * time.Millisecond)
	m.SetBackfillTotal(50)
	m.BlockBackfilled()
	m.PeerPunished("invalid_message")

	var mr Metricer = m
	require.EqualValues(t, 2, mr.TotalSnapshots())
	require.EqualValues(t, 100, mr.SnapshotHeight())
	require.EqualValues(t, 2, mr.SnapshotChunksCount())
	require.EqualValues(t, 4, mr.SnapshotChunksTotal())
	require.Equal(t, 20*time.Millisecond, mr.ChunkProcessAvgTime())
	require.EqualValues(t, 1, mr.BackFilledBlocks())
	require.EqualValues(t, 50, mr.BackFillBlocksTotal())

	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"node_statesync_snapshots_discovered_total", "node_statesync_snapshot_height",
		"node_statesync_chunk_apply_seconds", "node_statesync_peers_punished_total", "node_statesync_backfilled_blocks"} {
		require.True(t, names[want], want)
	}

	// A second reactor needs its own registerer.
	_, err = NewMetrics(reg, "node")
	require.Error(t, err)
	_, err = NewMetrics(prometheus.NewRegistry(), "node")
	require.NoError(t, err)
}

func TestMetricsConcurrentUse(t *testing.T) {
	m := NopMetrics()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				m.ChunkApplied(time.Millisecond)
				_ = m.ChunkProcessAvgTime()
				m.SnapshotDiscovered()
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, 8000, m.SnapshotChunksCount())
	require.EqualValues(t, 8000, m.TotalSnapshots())
}
