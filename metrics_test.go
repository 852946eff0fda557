package statesync

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// gathered returns the metric families on reg by name.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]int {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]int{}
	for _, f := range families {
		out[f.GetName()] = len(f.GetMetric())
	}
	return out
}

func TestMetricsCountAndRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "node")
	require.NoError(t, err)

	m.setSyncing(true)
	m.setPeers(3)
	m.discoveryRound()
	m.snapshotDiscovered()
	m.snapshotDiscovered()
	m.snapshotRejected("app")
	m.setSnapshot(100, 4)
	m.chunkFetched(1000)
	m.chunkFetched(24)
	m.chunkTimeout()
	m.chunkApplied(10 * time.Millisecond)
	m.chunkApplied(30 * time.Millisecond)
	m.peerPunished("invalid_message")
	m.unsolicited()
	m.requestDropped()
	m.setBackfillTotal(50)
	m.blockBackfilled()

	var mr Metricer = m
	require.EqualValues(t, 2, mr.TotalSnapshots())
	require.EqualValues(t, 100, mr.SnapshotHeight())
	require.EqualValues(t, 2, mr.SnapshotChunksCount())
	require.EqualValues(t, 4, mr.SnapshotChunksTotal())
	require.Equal(t, 20*time.Millisecond, mr.ChunkProcessAvgTime())
	require.EqualValues(t, 1, mr.BackFilledBlocks())
	require.EqualValues(t, 50, mr.BackFillBlocksTotal())
	require.EqualValues(t, 3, m.Peers())
	require.EqualValues(t, 1, m.DiscoveryRounds())
	require.Greater(t, m.BackfillRate(), 0.0)

	p := m.prom
	require.Equal(t, 1.0, testutil.ToFloat64(p.active))
	require.Equal(t, 3.0, testutil.ToFloat64(p.peers))
	require.Equal(t, 2.0, testutil.ToFloat64(p.snapshots))
	require.Equal(t, 100.0, testutil.ToFloat64(p.snapshotHeight))
	require.Equal(t, 4.0, testutil.ToFloat64(p.chunksTotal))
	require.Equal(t, 2.0, testutil.ToFloat64(p.chunksApplied))
	require.Equal(t, 2.0, testutil.ToFloat64(p.chunksFetched))
	require.Equal(t, 1024.0, testutil.ToFloat64(p.chunkBytes))
	require.Equal(t, 1.0, testutil.ToFloat64(p.chunkTimeouts))
	require.Equal(t, 1.0, testutil.ToFloat64(p.peersPunished.WithLabelValues("invalid_message")))
	require.Equal(t, 1.0, testutil.ToFloat64(p.snapshotRejected.WithLabelValues("app")))
	require.Equal(t, 1.0, testutil.ToFloat64(p.backfilled))
	require.Equal(t, 50.0, testutil.ToFloat64(p.backfillTotal))
	require.Greater(t, testutil.ToFloat64(p.backfillRate), 0.0)
	m.setSyncing(false)
	require.Equal(t, 0.0, testutil.ToFloat64(p.active))

	names := gathered(t, reg)
	for _, want := range []string{
		"node_statesync_active", "node_statesync_peers", "node_statesync_discovery_rounds_total",
		"node_statesync_snapshots_discovered_total", "node_statesync_snapshots_rejected_total",
		"node_statesync_snapshot_height", "node_statesync_snapshot_chunks", "node_statesync_snapshot_chunks_applied",
		"node_statesync_chunks_fetched_total", "node_statesync_chunk_bytes_total", "node_statesync_chunk_timeouts_total",
		"node_statesync_chunk_apply_seconds", "node_statesync_peers_punished_total",
		"node_statesync_unsolicited_messages_total", "node_statesync_requests_dropped_total",
		"node_statesync_backfilled_blocks", "node_statesync_backfill_blocks_target",
		"node_statesync_backfill_blocks_per_second",
	} {
		require.Contains(t, names, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems, "metric names follow Prometheus conventions")

	// A new snapshot resets the per-snapshot counters.
	m.setSnapshot(200, 8)
	require.EqualValues(t, 0, mr.SnapshotChunksCount())
	require.Zero(t, mr.ChunkProcessAvgTime())
	require.EqualValues(t, 2, mr.TotalSnapshots())
}

func TestMetricsRegistries(t *testing.T) {
	// Two instances on two registries are independent.
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a, err := NewMetrics(regA, "node")
	require.NoError(t, err)
	b, err := NewMetrics(regB, "node")
	require.NoError(t, err)
	a.setPeers(5)
	a.snapshotDiscovered()
	require.Equal(t, 5.0, testutil.ToFloat64(a.prom.peers))
	require.Equal(t, 0.0, testutil.ToFloat64(b.prom.peers))
	require.EqualValues(t, 0, b.TotalSnapshots())

	// The same registry again (a reactor rebuilt in one process) adopts
	// the registered collectors: the series continue.
	again, err := NewMetrics(regA, "node")
	require.NoError(t, err)
	again.snapshotDiscovered()
	require.Equal(t, 2.0, testutil.ToFloat64(a.prom.snapshots))
	require.EqualValues(t, 1, again.TotalSnapshots(), "the Metricer counters are per instance")

	// Another namespace on the same registry does not collide either.
	_, err = NewMetrics(regA, "other")
	require.NoError(t, err)

	// A clashing metric of another shape (like CometBFT's own statesync
	// gauge, labelled by chain_id) is an error, and what the call had
	// registered before the clash is unregistered again.
	regC := prometheus.NewRegistry()
	require.NoError(t, regC.Register(prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "cometbft", Subsystem: "statesync", Name: "backfill_blocks_per_second", Help: "clash",
	}, []string{"chain_id"})))
	_, err = NewMetrics(regC, "cometbft")
	require.ErrorContains(t, err, "backfill_blocks_per_second")
	require.Empty(t, gathered(t, regC), "only the (empty) clashing vec is left")
	_, err = NewMetrics(prometheus.WrapRegistererWithPrefix("x_", regC), "cometbft")
	require.NoError(t, err, "a prefixed registerer avoids the clash")
	// CometBFT's real metric name does not clash.
	regD := prometheus.NewRegistry()
	require.NoError(t, regD.Register(prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "cometbft", Subsystem: "statesync", Name: "syncing", Help: "CometBFT's",
	}, []string{"chain_id"})))
	_, err = NewMetrics(regD, "cometbft")
	require.NoError(t, err)

	_, err = NewMetrics(nil, "x")
	require.Error(t, err)
}

func TestMetricsReasonLabelsBounded(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry(), "n")
	require.NoError(t, err)
	for i := 0; i < 3*maxReasonLabels; i++ {
		m.peerPunished(fmt.Sprintf("reason-%d", i))
		m.snapshotRejected(fmt.Sprintf("reason-%d", i))
	}
	m.peerPunished("")
	require.Equal(t, maxReasonLabels+1, testutil.CollectAndCount(m.prom.peersPunished))
	require.Equal(t, maxReasonLabels+1, testutil.CollectAndCount(m.prom.snapshotRejected))
	require.Equal(t, float64(2*maxReasonLabels+1), testutil.ToFloat64(m.prom.peersPunished.WithLabelValues("other")))
}

func TestMetricsNopAndNil(t *testing.T) {
	m := NopMetrics()
	m.setSnapshot(7, 3)
	m.chunkApplied(time.Second)
	m.chunkFetched(10)
	m.peerPunished("x")
	m.setSyncing(true)
	require.EqualValues(t, 7, m.SnapshotHeight())
	require.EqualValues(t, 1, m.SnapshotChunksCount())
	require.Equal(t, time.Second, m.ChunkProcessAvgTime())

	var nilM *Metrics
	nilM.setSnapshot(1, 1)
	nilM.chunkApplied(time.Second)
	nilM.setBackfillTotal(1)
	nilM.blockBackfilled()
	nilM.peerPunished("x")
	nilM.setPeers(1)
	require.Zero(t, nilM.SnapshotHeight())
	require.Zero(t, nilM.ChunkProcessAvgTime())
	require.Zero(t, nilM.BackfillRate())
}

func TestMetricsConcurrentUse(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry(), "n")
	require.NoError(t, err)
	const workers, rounds = 8, 500
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < rounds; j++ {
				m.chunkApplied(time.Millisecond)
				m.chunkFetched(10)
				m.snapshotDiscovered()
				m.blockBackfilled()
				m.peerPunished(fmt.Sprintf("r%d", j%4))
				m.setPeers(j)
				_ = m.ChunkProcessAvgTime()
				_ = m.SnapshotChunksCount()
				_ = m.BackfillRate()
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, workers*rounds, m.SnapshotChunksCount())
	require.EqualValues(t, workers*rounds, m.TotalSnapshots())
	require.EqualValues(t, workers*rounds, m.BackFilledBlocks())
	require.Equal(t, time.Millisecond, m.ChunkProcessAvgTime())
	require.Equal(t, float64(workers*rounds*10), testutil.ToFloat64(m.prom.chunkBytes))
}
