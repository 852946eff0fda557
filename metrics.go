package statesync

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsSubsystem is the Prometheus subsystem of every metric.
const MetricsSubsystem = "statesync"

// Metricer reads the progress counters of a Reactor. Every method is safe to
// call concurrently at any time.
type Metricer interface {
	// TotalSnapshots is the number of distinct snapshots discovered.
	TotalSnapshots() int64
	// ChunkProcessAvgTime is the mean time the app took per applied chunk.
	ChunkProcessAvgTime() time.Duration
	// SnapshotHeight is the height of the snapshot being (or last) restored.
	SnapshotHeight() int64
	// SnapshotChunksCount is the number of chunks applied so far.
	SnapshotChunksCount() int64
	// SnapshotChunksTotal is the number of chunks of the snapshot.
	SnapshotChunksTotal() int64
	// BackFilledBlocks is the number of blocks backfilled so far.
	BackFilledBlocks() int64
	// BackFillBlocksTotal is the number of blocks the backfill needs at most.
	BackFillBlocksTotal() int64
}

// Metrics holds one Reactor's counters: atomics behind Metricer, mirrored
// to Prometheus collectors when built with NewMetrics.
type Metrics struct {
	totalSnapshots atomic.Int64
	applyNanos     atomic.Int64
	applied        atomic.Int64
	snapHeight     atomic.Int64
	chunksTotal    atomic.Int64
	backfilled     atomic.Int64
	backfillTotal  atomic.Int64

	prom *promMetrics // nil for NopMetrics
}

type promMetrics struct {
	syncing          prometheus.Gauge
	peers            prometheus.Gauge
	snapshots        prometheus.Counter
	snapshotHeight   prometheus.Gauge
	chunksTotal      prometheus.Gauge
	chunksApplied    prometheus.Gauge
	chunkBytes       prometheus.Counter
	chunksFetched    prometheus.Counter
	chunkTimeouts    prometheus.Counter
	chunkApplyTime   prometheus.Histogram
	snapshotRejected *prometheus.CounterVec
	peerPunished     *prometheus.CounterVec
	unsolicited      prometheus.Counter
	requestsDropped  prometheus.Counter
	backfilled       prometheus.Gauge
	backfillTotal    prometheus.Gauge
}

var _ Metricer = (*Metrics)(nil)

// NopMetrics returns Metrics that count (Metricer works) but export nothing.
func NopMetrics() *Metrics { return &Metrics{} }

// NewMetrics registers the Reactor's collectors on reg under namespace and
// subsystem "statesync". Each Reactor needs its own Registerer (or
// prometheus.WrapRegistererWith labels); a clash is returned as an error.
func NewMetrics(reg prometheus.Registerer, namespace string) (*Metrics, error) {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: MetricsSubsystem, Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: MetricsSubsystem, Name: name, Help: help})
	}
	p := &promMetrics{
		syncing:        g("syncing", "1 while a state sync is running."),
		peers:          g("peers", "Connected peers known to the reactor."),
		snapshots:      c("snapshots_discovered_total", "Distinct snapshots discovered."),
		snapshotHeight: g("snapshot_height", "Height of the snapshot being restored."),
		chunksTotal:    g("snapshot_chunks_total", "Chunks of the snapshot being restored."),
		chunksApplied:  g("snapshot_chunks_applied", "Chunks applied of the snapshot being restored."),
		chunkBytes:     c("chunk_bytes_total", "Chunk bytes received."),
		chunksFetched:  c("chunks_fetched_total", "Chunks received and spooled."),
		chunkTimeouts:  c("chunk_timeouts_total", "Chunk requests that timed out."),
		chunkApplyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: "chunk_apply_seconds",
			Help: "Time the app took to apply one chunk.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		snapshotRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: "snapshots_rejected_total",
			Help: "Snapshots given up, by reason.",
		}, []string{"reason"}),
		peerPunished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: "peers_punished_total",
			Help: "Peers disconnected for cause, by reason.",
		}, []string{"reason"}),
		unsolicited:     c("unsolicited_messages_total", "Late, duplicate or unsolicited responses dropped."),
		requestsDropped: c("requests_dropped_total", "Inbound requests dropped because the peer had too many queued."),
		backfilled:      g("backfilled_blocks", "Blocks backfilled."),
		backfillTotal:   g("backfill_blocks_total", "Blocks the backfill needs at most."),
	}
	for _, col := range []prometheus.Collector{
		p.syncing, p.peers, p.snapshots, p.snapshotHeight, p.chunksTotal, p.chunksApplied, p.chunkBytes,
		p.chunksFetched, p.chunkTimeouts, p.chunkApplyTime, p.snapshotRejected, p.peerPunished, p.unsolicited,
		p.requestsDropped, p.backfilled, p.backfillTotal,
	} {
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("statesync metrics already registered on this registerer: give each reactor its own")
			}
			return nil, err
		}
	}
	return &Metrics{prom: p}, nil
}

// Metricer implementation.

func (m *Metrics) TotalSnapshots() int64 { return m.totalSnapshots.Load() }
func (m *Metrics) ChunkProcessAvgTime() time.Duration {
	n := m.applied.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(m.applyNanos.Load() / n)
}
func (m *Metrics) SnapshotHeight() int64      { return m.snapHeight.Load() }
func (m *Metrics) SnapshotChunksCount() int64 { return m.applied.Load() }
func (m *Metrics) SnapshotChunksTotal() int64 { return m.chunksTotal.Load() }
func (m *Metrics) BackFilledBlocks() int64    { return m.backfilled.Load() }
func (m *Metrics) BackFillBlocksTotal() int64 { return m.backfillTotal.Load() }

// Recording methods, called by the Reactor.

// SetSyncing marks a Sync as running or not.
func (m *Metrics) SetSyncing(on bool) {
	if m.prom != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.prom.syncing.Set(v)
	}
}

// SetPeers records the number of connected peers.
func (m *Metrics) SetPeers(n int) {
	if m.prom != nil {
		m.prom.peers.Set(float64(n))
	}
}

// SnapshotDiscovered counts a new snapshot.
func (m *Metrics) SnapshotDiscovered() {
	m.totalSnapshots.Add(1)
	if m.prom != nil {
		m.prom.snapshots.Inc()
	}
}

// SetSnapshot records the snapshot being restored and resets chunk counts.
func (m *Metrics) SetSnapshot(height, chunks int64) {
	m.snapHeight.Store(height)
	m.chunksTotal.Store(chunks)
	m.applied.Store(0)
	m.applyNanos.Store(0)
	if m.prom != nil {
		m.prom.snapshotHeight.Set(float64(height))
		m.prom.chunksTotal.Set(float64(chunks))
		m.prom.chunksApplied.Set(0)
	}
}

// ChunkFetched counts a spooled chunk of n bytes.
func (m *Metrics) ChunkFetched(n int) {
	if m.prom != nil {
		m.prom.chunksFetched.Inc()
		m.prom.chunkBytes.Add(float64(n))
	}
}

// ChunkApplied counts a chunk the app accepted after d.
func (m *Metrics) ChunkApplied(d time.Duration) {
	n := m.applied.Add(1)
	m.applyNanos.Add(int64(d))
	if m.prom != nil {
		m.prom.chunksApplied.Set(float64(n))
		m.prom.chunkApplyTime.Observe(d.Seconds())
	}
}

// ChunkTimeout counts a timed-out chunk request.
func (m *Metrics) ChunkTimeout() {
	if m.prom != nil {
		m.prom.chunkTimeouts.Inc()
	}
}

// SnapshotRejected counts a snapshot given up for reason.
func (m *Metrics) SnapshotRejected(reason string) {
	if m.prom != nil {
		m.prom.snapshotRejected.WithLabelValues(reason).Inc()
	}
}

// PeerPunished counts a peer disconnected for reason.
func (m *Metrics) PeerPunished(reason string) {
	if m.prom != nil {
		m.prom.peerPunished.WithLabelValues(reason).Inc()
	}
}

// Unsolicited counts a dropped late, duplicate or unsolicited response.
func (m *Metrics) Unsolicited() {
	if m.prom != nil {
		m.prom.unsolicited.Inc()
	}
}

// RequestDropped counts an inbound request dropped by the serving caps.
func (m *Metrics) RequestDropped() {
	if m.prom != nil {
		m.prom.requestsDropped.Inc()
	}
}

// SetBackfillTotal records how many blocks the backfill needs at most.
func (m *Metrics) SetBackfillTotal(n int64) {
	m.backfillTotal.Store(n)
	m.backfilled.Store(0)
	if m.prom != nil {
		m.prom.backfillTotal.Set(float64(n))
		m.prom.backfilled.Set(0)
	}
}

// BlockBackfilled counts a backfilled block.
func (m *Metrics) BlockBackfilled() {
	n := m.backfilled.Add(1)
	if m.prom != nil {
		m.prom.backfilled.Set(float64(n))
	}
}
