package statesync

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkRestore restores a snapshot over real MConnections with
// CometBFT's default per-connection rate (5 120 000 B/s) and reports the
// chunk throughput and the link utilisation: bytes / (time x peers x rate).
// The time counts from the start of the restore to the last chunk received
// (discovery, light-client verification and the app's final apply
// excluded: this measures how well the links are used).
func BenchmarkRestore(b *testing.B) {
	const rate = 5_120_000
	for _, chunk := range []int{1 << 20, 10 << 20} {
		for _, peers := range []int{2, 4, 8} {
			size := max(100<<20, 6*peers*chunk) // 100 MB, or 6 chunks per peer
			b.Run(fmt.Sprintf("chunk=%dMB/peers=%d", chunk>>20, peers), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					tn := newTestNet(b, netOpts{servers: peers, shareApp: true, keys: size / 4096, valueSize: 4096 - 14,
						chunkSize: chunk, rate: rate, cfg: func(c *Config) { c.DiscoveryTime, c.ChunkRequestTimeout = 100*time.Millisecond, 10*time.Second }})
					runtime.GC() // the setup's garbage must not be collected during the run
					sub, cancel := tn.fresh.reactor.Subscribe()
					var restoreStart, fetched time.Time
					var bytes int64
					done := make(chan struct{})
					go func() {
						defer close(done)
						for p := range sub {
							if p.Phase == PhaseRestore && restoreStart.IsZero() {
								restoreStart = p.Time
							}
							if p.ChunksTotal > 0 && p.ChunksFetched == p.ChunksTotal && fetched.IsZero() {
								fetched, bytes = p.Time, p.Bytes
							}
							if p.Phase == PhaseDone || p.Phase == PhaseFailed {
								return
							}
						}
					}()
					_, err := tn.fresh.reactor.Sync(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					<-done
					cancel()
					took := fetched.Sub(restoreStart)
					b.ReportMetric(float64(bytes)/1e6/took.Seconds(), "MB/s")
					b.ReportMetric(float64(bytes)/(took.Seconds()*float64(peers)*rate), "link-util")
				}
			})
		}
	}
}
