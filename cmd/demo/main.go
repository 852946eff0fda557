// Command demo shows a state sync end to end, in one process: serving nodes
// holding a snapshot of a real signed chain, and a fresh node that discovers
// the snapshot, verifies its height with CometBFT's light client over light
// blocks fetched from its peers (use_p2p: no RPC server anywhere), fetches
// the chunks from every serving node over real MConnections (loopback TCP,
// CometBFT's default 5 MB/s per connection), restores its app, bootstraps
// its state and block stores, and backfills the block headers below the
// snapshot into them.
//
// Run it with `make demo` (or `go run ./cmd/demo -h` for the knobs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

func main() {
	var (
		peers     = flag.Int("peers", 3, "serving nodes")
		sizeMB    = flag.Int("size", 40, "snapshot size in MB")
		chunkKB   = flag.Int("chunk", 1024, "chunk size in KiB")
		rate      = flag.Int64("rate", 5_120_000, "p2p send/recv rate per connection, bytes/s (CometBFT's default)")
		height    = flag.Int64("height", 100, "snapshot height")
		plain     = flag.Bool("plain", false, "plain progress lines even on a terminal")
		timeoutFl = flag.Duration("timeout", 5*time.Minute, "give up after this long")
	)
	flag.Parse()
	if err := run(*peers, *sizeMB, *chunkKB, *rate, *height, *plain, *timeoutFl); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// env implements p2ptest.TB for a command: failures abort the demo, and
// cleanups run at the end.
type env struct{ cleanups []func() }

func (e *env) Helper() {}
func (e *env) Fatalf(format string, args ...any) {
	panic(fmt.Errorf(format, args...))
}
func (e *env) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }
func (e *env) close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}

type node struct {
	app        *kvapp.App
	reactor    *statesync.Reactor
	stateStore sm.Store
	blockStore *store.BlockStore
}

func run(peers, sizeMB, chunkKB int, rate, height int64, plain bool, timeout time.Duration) (err error) {
	e := &env{}
	defer e.close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	fmt.Printf("statesync demo: %d serving nodes, a %d MB snapshot in %d KiB chunks, %.1f MB/s per connection\n",
		peers, sizeMB, chunkKB, float64(rate)/1e6)

	// 1. The state every serving node holds, and a signed chain whose
	// header at height+1 commits to its app hash.
	const valueSize = 4096
	keys := sizeMB << 20 / (valueSize + 14)
	appOpts := kvapp.Options{Keys: keys, ValueSize: valueSize, ChunkSize: chunkKB << 10, Height: height}
	source := kvapp.New(appOpts)
	appHash := source.AppHash()
	chain, err := chaingen.New(chaingen.Options{
		ChainID: "statesync-demo", Height: height + 4, Validators: 4,
		ValSetChanges: map[int64]int{height / 2: 7, height - 3: 5},
		AppHash: func(h int64) []byte {
			if h == height+1 {
				return appHash
			}
			return nil
		},
		StartTime: time.Now().Add(-time.Duration(height) * time.Second),
	})
	if err != nil {
		return err
	}
	fmt.Printf("  chain %q: %d blocks signed by changing validator sets; snapshot at height %d, app hash %X\n",
		chain.ChainID(), chain.Height(), height, appHash[:8])

	mk := func(app *kvapp.App, serving bool) (*node, error) {
		n := &node{app: app}
		stateDB, blockDB := dbm.NewMemDB(), dbm.NewMemDB()
		n.stateStore = sm.NewStore(stateDB, sm.StoreOptions{})
		n.blockStore = store.NewBlockStore(blockDB)
		if serving {
			if err := chain.Populate(n.blockStore, n.stateStore, 1, height+3); err != nil {
				return nil, err
			}
		}
		conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
		if err := conns.Start(); err != nil {
			return nil, err
		}
		e.Cleanup(func() { _ = conns.Stop() })
		cfg := statesync.DefaultConfig()
		cfg.DiscoveryTime = time.Second
		tmp, err := os.MkdirTemp("", "statesync-demo-")
		if err != nil {
			return nil, err
		}
		e.Cleanup(func() { os.RemoveAll(tmp) })
		cfg.TempDir = tmp
		// The trust root an operator would take from a block explorer.
		trust := chain.TrustOptions(1, 24*time.Hour)
		cfg.Enable, cfg.UseP2P = !serving, true
		cfg.TrustHeight, cfg.TrustHash = trust.Height, fmt.Sprintf("%X", trust.Hash)
		deps := statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: n.stateStore, BlockStore: n.blockStore, Genesis: chain.GenesisState(),
			Backfill: statesync.NewDBBackfillStore(blockDB, stateDB),
		}
		n.reactor, err = statesync.NewReactor(cfg, deps)
		return n, err
	}

	// 2. Serving nodes and the fresh node, on CometBFT switches.
	var nodes []*node
	for i := 0; i < peers; i++ {
		n, err := mk(kvapp.New(appOpts), true)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	fresh, err := mk(kvapp.New(kvapp.Options{}), false)
	if err != nil {
		return err
	}
	nodes = append(nodes, fresh)
	reactors := make([]map[string]p2p.Reactor, len(nodes))
	for i, n := range nodes {
		reactors[i] = map[string]p2p.Reactor{"STATESYNC": n.reactor}
	}
	p2ptest.Network(e, p2ptest.Config(rate), reactors)
	fmt.Printf("  %d CometBFT switches connected over loopback TCP (MConnection)\n", len(nodes))

	// 3. Sync, rendering progress.
	sub, unsubscribe := fresh.reactor.Subscribe()
	defer unsubscribe()
	tty := !plain && isTerminal()
	rendered := make(chan struct{})
	var restoreStart, fetchedAt time.Time
	var fetchedBytes int64
	go func() {
		defer close(rendered)
		last := statesync.Phase("")
		lastStep := uint32(0)
		for p := range sub {
			if p.Phase == statesync.PhaseRestore && restoreStart.IsZero() {
				restoreStart = p.Time
			}
			if p.ChunksTotal > 0 && p.ChunksFetched == p.ChunksTotal && fetchedAt.IsZero() {
				fetchedAt, fetchedBytes = p.Time, p.Bytes
			}
			line := render(p)
			switch {
			case tty:
				fmt.Printf("\r\033[K  %s", line)
				if p.Phase != last && last != "" {
					fmt.Println()
				}
			case p.Phase != last:
				fmt.Printf("  %s\n", line)
			default:
				if step := p.ChunksApplied / max(1, p.ChunksTotal/10); step != lastStep {
					lastStep = step
					fmt.Printf("  %s\n", line)
				}
			}
			last = p.Phase
			if p.Phase == statesync.PhaseDone || p.Phase == statesync.PhaseFailed {
				return
			}
		}
	}()
	start := time.Now()
	state, syncErr := fresh.reactor.Sync(ctx)
	took := time.Since(start)
	<-rendered
	if tty {
		fmt.Println()
	}
	if syncErr != nil {
		return syncErr
	}

	// 4. Check and summarise.
	if got := fresh.app.AppHash(); string(got) != string(appHash) {
		return fmt.Errorf("restored app hash %X differs from the source's %X", got, appHash)
	}
	loaded, err := fresh.stateStore.Load()
	if err != nil {
		return err
	}
	if loaded.LastBlockHeight != height {
		return fmt.Errorf("state store at height %d, want %d", loaded.LastBlockHeight, height)
	}
	if fresh.blockStore.LoadSeenCommit(height) == nil {
		return errors.New("no seen commit saved")
	}
	snap := source.Snapshot(uint64(height))
	xfer := fetchedAt.Sub(restoreStart)
	fmt.Println()
	fmt.Println("summary")
	rows := [][2]string{
		{"snapshot", fmt.Sprintf("height %d, format %d, %d chunks", snap.Height, snap.Format, snap.Chunks)},
		{"bytes", fmt.Sprintf("%.1f MB", float64(fetchedBytes)/1e6)},
		{"sync time", took.Round(time.Millisecond).String() + " (discovery, P2P verification, restore, bootstrap, backfill)"},
		{"transfer", fmt.Sprintf("%.1f MB/s over %d peers = %.0f%% of their summed link rate",
			float64(fetchedBytes)/1e6/xfer.Seconds(), peers,
			100*float64(fetchedBytes)/(xfer.Seconds()*float64(peers)*float64(rate)))},
		{"state", fmt.Sprintf("height %d, app hash %X, %d validators", state.LastBlockHeight, state.AppHash[:8], state.Validators.Size())},
		{"stores", fmt.Sprintf("state store at height %d, seen commit saved", loaded.LastBlockHeight)},
		{"backfill", backfillLine(fresh)},
	}
	for _, r := range rows {
		fmt.Printf("  %-10s %s\n", r[0], r[1])
	}
	fmt.Println("ok: the fresh node's app and stores match the chain")
	return nil
}

func backfillLine(n *node) string {
	res := n.reactor.LastBackfill()
	if res == nil {
		return "not run"
	}
	line := fmt.Sprintf("%d blocks (heights %d..%d) in %v, stopped: %v", res.Blocks, res.From, res.To,
		res.Duration.Round(time.Millisecond), res.Stopped)
	if res.Err != nil {
		line += fmt.Sprintf(" (error: %v)", res.Err)
	}
	if meta := n.blockStore.LoadBlockMeta(res.To); meta != nil && n.blockStore.LoadBlockCommit(res.To) != nil {
		line += fmt.Sprintf("; CometBFT's block store loads the meta and commit of height %d", res.To)
	}
	return line
}

func render(p statesync.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s", p.Phase)
	if p.SnapshotHeight > 0 {
		fmt.Fprintf(&b, " snapshot %d", p.SnapshotHeight)
	}
	if p.Phase == statesync.PhaseBackfill || p.BackfillTotal > 0 {
		fmt.Fprintf(&b, "  backfill %d/%d blocks", p.BackfillDone, p.BackfillTotal)
	}
	if p.ChunksTotal > 0 {
		fmt.Fprintf(&b, "  chunks fetched %d/%d applied %d/%d  %.1f MB  %.1f MB/s", p.ChunksFetched, p.ChunksTotal,
			p.ChunksApplied, p.ChunksTotal, float64(p.Bytes)/1e6, p.Rate/1e6)
		if p.ETA > 0 {
			fmt.Fprintf(&b, "  ETA %v", p.ETA.Round(100*time.Millisecond))
		}
	} else {
		fmt.Fprintf(&b, " %d snapshots seen", p.Snapshots)
	}
	if p.Err != nil {
		fmt.Fprintf(&b, "  error: %v", p.Err)
	}
	return b.String()
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
