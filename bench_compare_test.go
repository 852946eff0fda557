package statesync

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"

	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// heapSampler records the peak of HeapInuse above a baseline.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	go func() {
		defer close(h.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > base && ms.HeapInuse-base > h.peak.Load() {
					h.peak.Store(ms.HeapInuse - base)
				}
			}
		}
	}()
	return h
}

func (h *heapSampler) finish() float64 {
	close(h.stop)
	<-h.done
	return float64(h.peak.Load()) / (1 << 20)
}

// BenchmarkCompare restores the same snapshot (100 MB, or 6 chunks per peer
// when that is more, so the last round of chunks does not dominate) from the same serving
// nodes (running our reactor) with our reactor and with CometBFT v0.40's
// built-in one, in one run. Both are timed from the accepted offer to the
// last chunk applied. Metrics: ours and theirs in MB/s, ours/theirs, and
// each one's link utilisation (bytes / (time x peers x rate)); heap-MB is
// the growth of the in-use heap during our restore (the serving nodes live
// in the same process, so absolute heap says nothing).
func BenchmarkCompare(b *testing.B) {
	for _, rate := range []int64{5_120_000, 0} {
		for _, chunk := range []int{1 << 20, 10 << 20} {
			for _, peers := range []int{2, 4, 8} {
				if rate == 0 && (chunk != 1<<20 || peers != 4) {
					continue // unlimited: one configuration
				}
				name := fmt.Sprintf("rate=%d/chunk=%dMB/peers=%d", rate, chunk>>20, peers)
				b.Run(name, func(b *testing.B) {
					p2pRate := rate
					if p2pRate == 0 {
						p2pRate = 1 << 40 // "lifted"
					}
					for i := 0; i < b.N; i++ {
						benchCompare(b, peers, chunk, max(100<<20, 6*peers*chunk), p2pRate, rate)
					}
				})
			}
		}
	}
}

func benchCompare(b *testing.B, peers, chunk, size int, p2pRate, rate int64) {
	tn := newTestNet(b, netOpts{servers: peers, shareApp: true, keys: size / 4096, valueSize: 4096 - 14, chunkSize: chunk, rate: p2pRate,
		cfg: func(c *Config) { c.DiscoveryTime, c.ChunkRequestTimeout = 100*time.Millisecond, 10*time.Second }})
	runtime.GC()

	// Ours.
	sub, cancel := tn.fresh.reactor.Subscribe()
	var start, end time.Time
	var bytes int64
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for p := range sub {
			if p.Phase == PhaseRestore && start.IsZero() {
				start = p.Time
			}
			if p.Phase == PhaseBootstrap && end.IsZero() {
				end, bytes = p.Time, p.Bytes
			}
			if p.Phase == PhaseDone || p.Phase == PhaseFailed {
				return
			}
		}
	}()
	heap := sampleHeap()
	if _, err := tn.fresh.reactor.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	heapMB := heap.finish()
	<-watched
	cancel()
	ours := end.Sub(start)

	// Theirs, from the same serving nodes.
	runtime.GC()
	app := &kvapp.Timed{App: kvapp.New(kvapp.Options{})}
	stock := stockReactor(b, app)
	node := p2ptest.Start(b, tn.p2pCfg, 50, map[string]p2p.Reactor{"STATESYNC": stock}, nil)
	for _, s := range tn.servers {
		p2ptest.Connect(b, node, s.p2p)
	}
	if _, _, err := stock.Sync(chainStateProvider(b, tn.chain), 5*time.Second); err != nil {
		b.Fatal(err)
	}
	theirs := app.RestoreTime()

	mb := float64(bytes) / 1e6
	b.ReportMetric(mb/ours.Seconds(), "ours-MB/s")
	b.ReportMetric(mb/theirs.Seconds(), "theirs-MB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ours/theirs")
	if rate > 0 {
		capacity := float64(peers) * float64(rate) / 1e6
		b.ReportMetric(mb/ours.Seconds()/capacity, "ours-util")
		b.ReportMetric(mb/theirs.Seconds()/capacity, "theirs-util")
	}
	b.ReportMetric(heapMB, "heap-MB")
}

// BenchmarkRestoreMemory restores a 1 GiB snapshot (kvapp's streaming mode:
// the serving app generates each chunk when asked, the restoring app keeps
// only a digest) from 2 peers with rate limits lifted, and reports the peak
// growth of the in-use heap during the restore: what the library holds,
// plus the serving side's chunks in flight in the same process.
func BenchmarkRestoreMemory(b *testing.B) {
	const size = 1 << 30
	for _, chunk := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("size=1GiB/chunk=%dMB", chunk>>20), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				tn := newTestNet(b, netOpts{servers: 2, shareApp: true, streamBytes: size, chunkSize: chunk,
					rate: 1 << 40, cfg: func(c *Config) {
						c.DiscoveryTime, c.ChunkRequestTimeout, c.Backfill = 100*time.Millisecond, 10*time.Second, false
					}})
				runtime.GC()
				heap := sampleHeap()
				start := time.Now()
				if _, err := tn.fresh.reactor.Sync(context.Background()); err != nil {
					b.Fatal(err)
				}
				took := time.Since(start)
				peak := heap.finish()
				inflight := float64(2*DefaultConfig().ChunkWindow*chunk) / (1 << 20)
				b.ReportMetric(peak, "peak-heap-MB")
				b.ReportMetric(inflight, "chunks-in-flight-MB")
				b.ReportMetric(float64(size)/1e6/took.Seconds(), "MB/s")
			}
		})
	}
}
