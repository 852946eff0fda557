package statesync

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsSubsystem is the Prometheus subsystem of every metric.
const MetricsSubsystem = "statesync"

// maxReasonLabels bounds the distinct values of the "reason" label; further
// reasons are counted as "other", so a bug or a hostile peer cannot grow the
// number of series without limit.
const maxReasonLabels = 32

// Metricer reads the progress counters of a Reactor (the interface of
// CometBFT's and Tendermint's state sync metrics). Every method is safe to
// call concurrently, at any time, also before the first Sync. An embedder
// gets one from Reactor.Metricer. The method names, BackFilledBlocks and
// BackFillBlocksTotal included, are Tendermint v0.35's, kept as they are so
// that code written against that interface compiles unchanged; the
// Prometheus series and everything else here say "backfill".
type Metricer interface {
	// TotalSnapshots is the number of distinct snapshots discovered.
	TotalSnapshots() int64
	// ChunkProcessAvgTime is the mean time the application took to apply
	// one chunk of the current snapshot (0 before the first).
	ChunkProcessAvgTime() time.Duration
	// SnapshotHeight is the height of the snapshot being (or last) restored.
	SnapshotHeight() int64
	// SnapshotChunksCount is the number of chunks of that snapshot applied.
	SnapshotChunksCount() int64
	// SnapshotChunksTotal is the number of chunks of that snapshot.
	SnapshotChunksTotal() int64
	// BackFilledBlocks is the number of blocks backfilled so far.
	BackFilledBlocks() int64
	// BackFillBlocksTotal is the number of blocks the backfill needs at most.
	BackFillBlocksTotal() int64
}

// Metrics holds one Reactor's counters. The counters behind Metricer are
// atomics and always count; with NewMetrics they are also exported as
// Prometheus collectors. Every method is safe for concurrent use and on a
// nil *Metrics (which records nothing).
type Metrics struct {
	totalSnapshots atomic.Int64
	applyNanos     atomic.Int64
	applied        atomic.Int64
	snapHeight     atomic.Int64
	chunksTotal    atomic.Int64
	backfilled     atomic.Int64
	backfillTotal  atomic.Int64
	backfillStart  atomic.Int64 // unix nanoseconds of setBackfillTotal
	peers          atomic.Int64
	rounds         atomic.Int64
	backfilling    atomic.Bool
	fallbacks      atomic.Int64

	reasonsMtx sync.Mutex
	reasons    map[string]struct{} // label values seen, at most maxReasonLabels

	prom *promMetrics // nil for NopMetrics
}

// promMetrics are the exported collectors. Names avoid CometBFT v0.40's
// own statesync metric (cometbft_statesync_syncing, labelled by chain_id),
// which a node registers on the same registry: ours is "active". Gauges
// carry no _total suffix.
type promMetrics struct {
	active           prometheus.Gauge
	peers            prometheus.Gauge
	discoveryRounds  prometheus.Counter
	snapshots        prometheus.Counter
	snapshotRejected *prometheus.CounterVec
	snapshotHeight   prometheus.Gauge
	chunksTotal      prometheus.Gauge
	chunksApplied    prometheus.Gauge
	chunksFetched    prometheus.Counter
	chunkBytes       prometheus.Counter
	chunkTimeouts    prometheus.Counter
	chunkApplyTime   prometheus.Histogram
	peersPunished    *prometheus.CounterVec
	unsolicited      prometheus.Counter
	requestsDropped  prometheus.Counter
	responsesDropped prometheus.Counter
	requestsThrottle prometheus.Counter
	backfilled       prometheus.Gauge
	backfillTotal    prometheus.Gauge
	backfillRate     prometheus.Gauge
	backfillActive   prometheus.Gauge
	fallbacks        prometheus.Counter
}

var _ Metricer = (*Metrics)(nil)

// NopMetrics returns Metrics that count (Metricer works) but export
// nothing.
func NopMetrics() *Metrics { return &Metrics{} }

// NewMetrics creates the collectors under namespace (e.g. "cometbft") and
// subsystem "statesync" and registers them on reg; nothing is registered
// globally. If a collector with the same description is already
// registered on reg (a Reactor rebuilt in the same process), the existing
// one is adopted, so its series continue; concurrently running Reactors
// should use distinct registerers (or prometheus.WrapRegistererWith
// labels), or they share those series. Any other registration error is
// returned, after unregistering what this call registered.
func NewMetrics(reg prometheus.Registerer, namespace string) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("statesync: NewMetrics needs a prometheus.Registerer (use NopMetrics for none)")
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: name, Help: help,
		})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: name, Help: help,
		})
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: name, Help: help,
		}, labels)
	}
	p := &promMetrics{
		active:           gauge("active", "1 while a state sync is running, else 0."),
		peers:            gauge("peers", "Connected peers known to the state sync reactor."),
		discoveryRounds:  counter("discovery_rounds_total", "Rounds of asking peers for snapshots."),
		snapshots:        counter("snapshots_discovered_total", "Distinct snapshots discovered."),
		snapshotRejected: counterVec("snapshots_rejected_total", "Snapshots given up, by reason.", "reason"),
		snapshotHeight:   gauge("snapshot_height", "Height of the snapshot being (or last) restored."),
		chunksTotal:      gauge("snapshot_chunks", "Chunks of the snapshot being (or last) restored."),
		chunksApplied:    gauge("snapshot_chunks_applied", "Chunks of that snapshot applied by the application."),
		chunksFetched:    counter("chunks_fetched_total", "Chunks received from peers and spooled."),
		chunkBytes:       counter("chunk_bytes_total", "Bytes of chunks received from peers."),
		chunkTimeouts:    counter("chunk_timeouts_total", "Chunk requests that timed out."),
		chunkApplyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: MetricsSubsystem, Name: "chunk_apply_seconds",
			Help: "Time the application took to apply one chunk.",
			// 1 ms to about 70 minutes: single chunk applies of an hour
			// have been reported.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
		peersPunished:   counterVec("peers_punished_total", "Peers disconnected for cause, by reason.", "reason"),
		unsolicited:     counter("unsolicited_messages_total", "Late, duplicate or unsolicited responses dropped."),
		requestsDropped: counter("requests_dropped_total", "Inbound requests dropped because the peer had too many queued."),
		backfilled:      gauge("backfilled_blocks", "Blocks backfilled by the current (or last) backfill."),
		backfillTotal:   gauge("backfill_blocks_target", "Blocks the current (or last) backfill needs at most."),
		backfillRate:    gauge("backfill_blocks_per_second", "Mean backfill rate since the backfill started."),
		backfillActive:  gauge("backfill_active", "1 while a background backfill is running, else 0."),
		fallbacks: counter("fallback_blocksync_total",
			"State syncs that found no usable snapshot and fell back to block sync from genesis (on_no_snapshot = blocksync)."),

		// Serving.
		responsesDropped: counter("responses_dropped_total",
			"Responses dropped because the peer's send queue was full (a slow or stalled reader)."),
		requestsThrottle: counter("requests_throttled_total",
			"Inbound requests held back because the peer was over its serving budget (chunk bytes or light-block load time)."),
	}
	cols := []struct {
		col   prometheus.Collector
		adopt func(prometheus.Collector) bool
	}{
		{p.active, adoptInto(&p.active)},
		{p.peers, adoptInto(&p.peers)},
		{p.discoveryRounds, adoptInto(&p.discoveryRounds)},
		{p.snapshots, adoptInto(&p.snapshots)},
		{p.snapshotRejected, adoptInto(&p.snapshotRejected)},
		{p.snapshotHeight, adoptInto(&p.snapshotHeight)},
		{p.chunksTotal, adoptInto(&p.chunksTotal)},
		{p.chunksApplied, adoptInto(&p.chunksApplied)},
		{p.chunksFetched, adoptInto(&p.chunksFetched)},
		{p.chunkBytes, adoptInto(&p.chunkBytes)},
		{p.chunkTimeouts, adoptInto(&p.chunkTimeouts)},
		{p.chunkApplyTime, adoptInto(&p.chunkApplyTime)},
		{p.peersPunished, adoptInto(&p.peersPunished)},
		{p.unsolicited, adoptInto(&p.unsolicited)},
		{p.requestsDropped, adoptInto(&p.requestsDropped)},
		{p.responsesDropped, adoptInto(&p.responsesDropped)},
		{p.requestsThrottle, adoptInto(&p.requestsThrottle)},
		{p.backfilled, adoptInto(&p.backfilled)},
		{p.backfillTotal, adoptInto(&p.backfillTotal)},
		{p.backfillRate, adoptInto(&p.backfillRate)},
		{p.backfillActive, adoptInto(&p.backfillActive)},
		{p.fallbacks, adoptInto(&p.fallbacks)},
	}
	var registered []prometheus.Collector
	for _, c := range cols {
		err := reg.Register(c.col)
		if err == nil {
			registered = append(registered, c.col)
			continue
		}
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) && c.adopt(are.ExistingCollector) {
			continue
		}
		for _, r := range registered {
			reg.Unregister(r)
		}
		return nil, fmt.Errorf("statesync: registering metrics: %w", err)
	}
	return &Metrics{prom: p}, nil
}

// adoptInto returns a function that stores an already registered collector
// in *dst if it has dst's type.
func adoptInto[T prometheus.Collector](dst *T) func(prometheus.Collector) bool {
	return func(existing prometheus.Collector) bool {
		c, ok := existing.(T)
		if ok {
			*dst = c
		}
		return ok
	}
}

// reason returns r as a label value, or "other" once maxReasonLabels
// distinct values were seen.
func (m *Metrics) reason(r string) string {
	if r == "" {
		r = "unknown"
	}
	m.reasonsMtx.Lock()
	defer m.reasonsMtx.Unlock()
	if _, ok := m.reasons[r]; ok {
		return r
	}
	if len(m.reasons) >= maxReasonLabels {
		return "other"
	}
	if m.reasons == nil {
		m.reasons = make(map[string]struct{})
	}
	m.reasons[r] = struct{}{}
	return r
}

// TotalSnapshots implements Metricer.
func (m *Metrics) TotalSnapshots() int64 {
	if m == nil {
		return 0
	}
	return m.totalSnapshots.Load()
}

// ChunkProcessAvgTime implements Metricer: the mean over the chunks applied
// since the last setSnapshot.
func (m *Metrics) ChunkProcessAvgTime() time.Duration {
	if m == nil {
		return 0
	}
	// The two loads are not one snapshot; a concurrent chunkApplied can
	// skew one reading by a chunk, never corrupt it.
	n := m.applied.Load()
	if n <= 0 {
		return 0
	}
	return time.Duration(m.applyNanos.Load() / n)
}

// SnapshotHeight implements Metricer.
func (m *Metrics) SnapshotHeight() int64 {
	if m == nil {
		return 0
	}
	return m.snapHeight.Load()
}

// SnapshotChunksCount implements Metricer.
func (m *Metrics) SnapshotChunksCount() int64 {
	if m == nil {
		return 0
	}
	return m.applied.Load()
}

// SnapshotChunksTotal implements Metricer.
func (m *Metrics) SnapshotChunksTotal() int64 {
	if m == nil {
		return 0
	}
	return m.chunksTotal.Load()
}

// BackFilledBlocks implements Metricer.
func (m *Metrics) BackFilledBlocks() int64 {
	if m == nil {
		return 0
	}
	return m.backfilled.Load()
}

// BackFillBlocksTotal implements Metricer.
func (m *Metrics) BackFillBlocksTotal() int64 {
	if m == nil {
		return 0
	}
	return m.backfillTotal.Load()
}

// Peers returns the last value given to setPeers.
func (m *Metrics) Peers() int64 {
	if m == nil {
		return 0
	}
	return m.peers.Load()
}

// DiscoveryRounds returns the number of discovery rounds.
func (m *Metrics) DiscoveryRounds() int64 {
	if m == nil {
		return 0
	}
	return m.rounds.Load()
}

// BackfillRate returns the mean backfill rate in blocks per second since
// the last setBackfillTotal (0 before).
func (m *Metrics) BackfillRate() float64 {
	if m == nil {
		return 0
	}
	return m.backfillRate(time.Now())
}

func (m *Metrics) backfillRate(now time.Time) float64 {
	start := m.backfillStart.Load()
	if start == 0 {
		return 0
	}
	secs := now.Sub(time.Unix(0, start)).Seconds()
	if secs <= 0 {
		return 0
	}
	rate := float64(m.backfilled.Load()) / secs
	if math.IsInf(rate, 0) || math.IsNaN(rate) {
		return 0
	}
	return rate
}

// setSyncing marks a Sync as running (true) or ended (false).
func (m *Metrics) setSyncing(on bool) {
	if m == nil || m.prom == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.prom.active.Set(v)
}

// setPeers records the number of connected peers.
func (m *Metrics) setPeers(n int) {
	if m == nil {
		return
	}
	m.peers.Store(int64(n))
	if m.prom != nil {
		m.prom.peers.Set(float64(n))
	}
}

// discoveryRound counts one round of asking peers for snapshots.
func (m *Metrics) discoveryRound() {
	if m == nil {
		return
	}
	m.rounds.Add(1)
	if m.prom != nil {
		m.prom.discoveryRounds.Inc()
	}
}

// snapshotDiscovered counts a new distinct snapshot.
func (m *Metrics) snapshotDiscovered() {
	if m == nil {
		return
	}
	m.totalSnapshots.Add(1)
	if m.prom != nil {
		m.prom.snapshots.Inc()
	}
}

// snapshotRejected counts a snapshot given up for reason (a short label
// such as "app", "format", "sender", "verify").
func (m *Metrics) snapshotRejected(reason string) {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.snapshotRejected.WithLabelValues(m.reason(reason)).Inc()
}

// setSnapshot records the snapshot about to be restored and resets the
// chunk counters and the mean apply time.
func (m *Metrics) setSnapshot(height, chunks int64) {
	if m == nil {
		return
	}
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

// chunkFetched counts a chunk of n bytes received and spooled.
func (m *Metrics) chunkFetched(n int) {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.chunksFetched.Inc()
	m.prom.chunkBytes.Add(float64(max(n, 0)))
}

// chunkApplied counts a chunk the application applied in d.
func (m *Metrics) chunkApplied(d time.Duration) {
	if m == nil {
		return
	}
	d = max(d, 0)
	m.applyNanos.Add(int64(d))
	n := m.applied.Add(1)
	if m.prom != nil {
		m.prom.chunksApplied.Set(float64(n))
		m.prom.chunkApplyTime.Observe(d.Seconds())
	}
}

// chunkTimeout counts a chunk request that timed out.
func (m *Metrics) chunkTimeout() {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.chunkTimeouts.Inc()
}

// peerPunished counts a peer disconnected for reason (a short label).
func (m *Metrics) peerPunished(reason string) {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.peersPunished.WithLabelValues(m.reason(reason)).Inc()
}

// unsolicited counts a late, duplicate or unsolicited response dropped.
func (m *Metrics) unsolicited() {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.unsolicited.Inc()
}

// requestDropped counts an inbound request dropped by the serving caps.
func (m *Metrics) requestDropped() {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.requestsDropped.Inc()
}

// responseDropped counts a response dropped because the peer's send queue
// was full.
func (m *Metrics) responseDropped() {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.responsesDropped.Inc()
}

// requestThrottled counts an inbound request held back because the peer
// was over its serving budget (once per request).
func (m *Metrics) requestThrottled() {
	if m == nil || m.prom == nil {
		return
	}
	m.prom.requestsThrottle.Inc()
}

// setBackfillTotal starts a backfill of at most n blocks: it resets the
// backfilled count and the rate clock.
func (m *Metrics) setBackfillTotal(n int64) {
	if m == nil {
		return
	}
	m.backfillTotal.Store(n)
	m.backfilled.Store(0)
	m.backfillStart.Store(time.Now().UnixNano())
	if m.prom != nil {
		m.prom.backfillTotal.Set(float64(n))
		m.prom.backfilled.Set(0)
		m.prom.backfillRate.Set(0)
	}
}

// blockBackfilled counts a backfilled block.
func (m *Metrics) blockBackfilled() {
	if m == nil {
		return
	}
	n := m.backfilled.Add(1)
	if m.prom != nil {
		m.prom.backfilled.Set(float64(n))
		m.prom.backfillRate.Set(m.backfillRate(time.Now()))
	}
}

// setBackfilling marks a background backfill as running (true) or ended.
func (m *Metrics) setBackfilling(on bool) {
	if m == nil {
		return
	}
	m.backfilling.Store(on)
	if m.prom != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.prom.backfillActive.Set(v)
	}
}

// Backfilling reports whether a background backfill is running.
func (m *Metrics) Backfilling() bool { return m != nil && m.backfilling.Load() }

// FallbackToBlockSync counts a state sync that found no usable snapshot
// and fell back to block sync from genesis (package node, on_no_snapshot).
func (m *Metrics) FallbackToBlockSync() {
	if m == nil {
		return
	}
	m.fallbacks.Add(1)
	if m.prom != nil {
		m.prom.fallbacks.Inc()
	}
}

// Fallbacks is the number of fallbacks to block sync from genesis.
func (m *Metrics) Fallbacks() int64 {
	if m == nil {
		return 0
	}
	return m.fallbacks.Load()
}
