// Command demo shows state sync end to end on a real CometBFT v0.40
// network, in one process, on loopback TCP only:
//
//  1. a validator set produces blocks with an app that takes a snapshot
//     every few blocks, and full nodes follow it; every node is a complete
//     CometBFT node (node.NewNode) running this library as its state sync
//     reactor, serving snapshots, chunks, light blocks and params;
//  2. a fresh node joins knowing only the genesis, its peers' addresses and
//     one trusted header hash; it discovers the snapshots, verifies the
//     chosen one with light blocks fetched from its peers over P2P (no RPC
//     server anywhere), fetches the chunks from every peer at once,
//     restores its app, bootstraps its stores, backfills the headers below
//     the snapshot, and hands over to block sync and consensus;
//  3. it follows the chain for a few blocks, and the demo checks that its
//     blocks and app state are the validators'.
//
// Run it with `make demo` (flags: `make demo ARGS='-size 64 -plain'`;
// `go run ./cmd/demo -h` lists them). It
// exits 0 after the summary, or 1 with the error.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/libs/log"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/internal/progressui"
)

type options struct {
	validators, fullNodes int
	sizeMiB, chunkKiB     int
	interval              int64
	follow                int64
	rate                  int64
	plain, verbose        bool
	timeout               time.Duration
}

func main() {
	o, err := parseFlags(filepath.Base(os.Args[0]), os.Args[1:], os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case err != nil:
		os.Exit(2) // the flag package printed the error and the usage
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line (without the program's name, which
// is name); errors and the usage (-h) go to out. It returns flag.ErrHelp
// for -h, and an error for a malformed or out-of-range value.
func parseFlags(name string, args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s [flags]\n\n"+
			"Starts a local CometBFT v0.40 network on loopback and state-syncs a fresh node into it\n"+
			"over P2P, with live progress and a summary. With make: make demo ARGS='-size 64 -plain'.\n\n"+
			"Flags:\n", name)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.validators, "validators", 3, "validators")
	fs.IntVar(&o.fullNodes, "full-nodes", 2, "serving full nodes (besides the validators)")
	fs.IntVar(&o.sizeMiB, "size", 256, "app state (and so snapshot) size in MiB")
	fs.IntVar(&o.chunkKiB, "chunk", 1024, "snapshot chunk size in KiB")
	fs.Int64Var(&o.interval, "snapshot-interval", 10, "the app takes a snapshot every N blocks")
	fs.Int64Var(&o.follow, "follow", 5, "blocks the fresh node must follow after catching up")
	fs.Int64Var(&o.rate, "rate", 0, "p2p send/recv rate per connection in B/s (0: CometBFT's default 5120000)")
	fs.BoolVar(&o.plain, "plain", false, "plain progress lines even on a terminal")
	fs.BoolVar(&o.verbose, "v", false, "print the nodes' logs to stderr")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	err := o.check()
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments %q (flags only)", fs.Args())
	}
	if err != nil {
		fmt.Fprintf(out, "%s: %v\n", name, err)
		fs.Usage()
		return o, err
	}
	return o, nil
}

// check rejects values the demo cannot run with.
func (o options) check() error {
	switch {
	case o.validators < 1:
		return fmt.Errorf("-validators %d: at least 1", o.validators)
	case o.fullNodes < 0:
		return fmt.Errorf("-full-nodes %d: must not be negative", o.fullNodes)
	case o.validators+o.fullNodes < 2:
		return fmt.Errorf("-validators %d -full-nodes %d: P2P verification needs at least 2 serving nodes",
			o.validators, o.fullNodes)
	case o.sizeMiB < 1:
		return fmt.Errorf("-size %d: at least 1 MiB", o.sizeMiB)
	case o.chunkKiB < 1:
		return fmt.Errorf("-chunk %d: at least 1 KiB", o.chunkKiB)
	case o.interval < 1:
		return fmt.Errorf("-snapshot-interval %d: at least 1", o.interval)
	case o.follow < 0:
		return fmt.Errorf("-follow %d: must not be negative", o.follow)
	case o.rate < 0:
		return fmt.Errorf("-rate %d: must not be negative", o.rate)
	case o.timeout <= 0:
		return fmt.Errorf("-timeout %v: must be positive", o.timeout)
	}
	return nil
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(o options) (err error) {
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, o.timeout)
	defer cancel()
	started := time.Now()

	var logger log.Logger
	var logFile *os.File
	if o.verbose {
		logger = log.NewFilter(log.NewTMLogger(log.NewSyncWriter(os.Stderr)), log.AllowInfo())
	} else {
		// Keep the nodes' logs for a post-mortem; removed on success.
		if logFile, err = os.CreateTemp("", "statesync-demo-*.log"); err != nil {
			return err
		}
		logger = log.NewFilter(log.NewTMLogger(log.NewSyncWriter(logFile)), log.AllowInfo())
		defer func() {
			_ = logFile.Close()
			if err == nil {
				_ = os.Remove(logFile.Name())
			} else {
				fmt.Fprintf(os.Stderr, "nodes' logs: %s\n", logFile.Name())
			}
		}()
	}
	rate := o.rate
	if rate <= 0 {
		rate = 5_120_000
	}

	step("Starting %d validators and %d full nodes (CometBFT v0.40, loopback TCP, %s per connection)",
		o.validators, o.fullNodes, progressui.Rate(float64(rate)))
	app := kvapp.Options{
		StreamBytes: int64(o.sizeMiB) << 20, ChunkSize: o.chunkKiB << 10, Seed: 42,
		// Stream snapshots cost nothing to keep: keep enough that the one
		// being restored outlives the restore.
		SnapshotInterval: o.interval, SnapshotKeep: 50,
	}
	net, err := localnet.Start(ctx, localnet.Options{
		ChainID: "statesync-demo", Validators: o.validators, FullNodes: o.fullNodes,
		App: app, Rate: o.rate, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("starting the network: %w", err)
	}
	defer func() {
		step("Stopping the network")
		if serr := net.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	fmt.Printf("    app: %s of state, a snapshot every %d blocks in %d KiB chunks\n",
		progressui.Bytes(int64(o.sizeMiB)<<20), o.interval, o.chunkKiB)
	for _, m := range net.Nodes {
		role := "full node"
		if m.Validator {
			role = "validator"
		}
		fmt.Printf("    %-10s %-9s %s\n", m.Name, role, m.P2PAddress())
	}

	// A snapshot is usable once its height+2 is committed (its state is
	// verified with the headers above it).
	step("Waiting for the chain to reach height %d (first snapshot at %d, usable two blocks later)",
		o.interval+2, o.interval)
	if err := net.WaitHeight(ctx, o.interval+2); err != nil {
		return err
	}
	fmt.Printf("    height %d after %s\n", net.Height(), time.Since(started).Round(100*time.Millisecond))

	trustHeight, trustHash, err := net.TrustRoot(1)
	if err != nil {
		return err
	}
	cfg := statesync.DefaultConfig()
	cfg.Enable, cfg.UseP2P = true, true
	cfg.TrustHeight, cfg.TrustHash = trustHeight, trustHash
	cfg.DiscoveryTime = 2 * time.Second
	tmp, err := os.MkdirTemp("", "statesync-demo-chunks-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg.TempDir = tmp

	step("Starting a fresh node: state sync over P2P (use_p2p, no RPC servers), trusting header %d = %s…",
		trustHeight, trustHash[:16])
	syncStart := time.Now()
	m, err := net.Join(localnet.JoinOptions{Name: "fresh", StateSync: cfg})
	if err != nil {
		return fmt.Errorf("starting the fresh node: %w", err)
	}
	n := m.Node()
	progress, unsubscribe := n.Reactor().Subscribe()
	defer unsubscribe()
	r := &progressui.Renderer{W: os.Stdout, TTY: !o.plain && progressui.IsTerminal(os.Stdout), Prefix: "    "}
	var restoreStart, fetchedAt time.Time
	var final statesync.Progress
	func() {
		defer r.Finish()
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.Done():
				return
			case p := <-progress:
				r.Update(p)
				if p.Phase == statesync.PhaseRestore && restoreStart.IsZero() {
					restoreStart = p.Time
				}
				if p.ChunksTotal > 0 && p.ChunksFetched == p.ChunksTotal && fetchedAt.IsZero() {
					fetchedAt = p.Time
				}
				final = p
				if p.Phase == statesync.PhaseDone || p.Phase == statesync.PhaseFailed {
					return
				}
			}
		}
	}()
	select {
	case <-n.Synced():
	case <-n.Done():
		return fmt.Errorf("the fresh node stopped: %w", n.Err())
	case <-ctx.Done():
		return fmt.Errorf("state sync did not finish within %v (last progress: %s)", o.timeout, progressui.Line(n.Reactor().Progress()))
	}
	res := n.SyncResult()
	snap := res.State.LastBlockHeight
	fmt.Printf("    handed over to block sync at height %d, %s after the node started\n",
		snap, time.Since(syncStart).Round(100*time.Millisecond))

	// Follow the chain: block sync catches up, then consensus.
	target := net.Height() + o.follow
	step("Following the chain to height %d", target)
	var lastShown time.Time
	err = localnet.WaitFor(ctx, func() bool {
		select {
		case <-n.Done():
			return true
		default:
		}
		h := max(m.Height(), snap) // the block store is empty until block sync saves snap+1
		if h >= target || time.Since(lastShown) >= time.Second {
			lastShown = time.Now()
			fmt.Printf("    fresh node at height %d (validators at %d)\n", h, net.Height())
		}
		return h >= target
	}, fmt.Sprintf("the fresh node to reach height %d", target))
	if err != nil {
		return err
	}
	if e := n.Err(); e != nil {
		return fmt.Errorf("the fresh node stopped: %w", e)
	}

	// Backfill ran alongside block sync; its result is needed below.
	var bf statesync.BackfillResult
	if r, err := n.WaitBackfill(ctx); err != nil {
		return fmt.Errorf("waiting for the backfill: %w", err)
	} else if r != nil {
		bf = *r
	}

	// Check: the fresh node's blocks and app are the validators'.
	v := net.Nodes[0]
	for _, h := range []int64{1, snap, target} {
		want, got := v.BlockStore().LoadBlockMeta(h), m.BlockStore().LoadBlockMeta(h)
		if want == nil || got == nil || want.BlockID.Hash.String() != got.BlockID.Hash.String() {
			return fmt.Errorf("block %d differs between the fresh node and %s", h, v.Name)
		}
	}
	if !bytes.Equal(m.App.AppHash(), v.App.AppHash()) {
		return fmt.Errorf("app hash %X differs from %s's %X", m.App.AppHash(), v.Name, v.App.AppHash())
	}

	// Summary.
	step("Summary")
	xfer := fetchedAt.Sub(restoreStart)
	rows := [][2]string{
		{"snapshot", fmt.Sprintf("height %d, %d chunks of %d KiB", snap, final.ChunksTotal, o.chunkKiB)},
		{"bytes", fmt.Sprintf("%s fetched from %d peers", progressui.Bytes(final.Bytes), len(net.Nodes))},
		{"restore", fmt.Sprintf("%s from Start to the bootstrapped state (discovery, P2P light-client verification, restore; backfill runs after the handover)",
			res.Restore.Round(time.Millisecond))},
	}
	if xfer > 0 {
		bps := float64(final.Bytes) / xfer.Seconds()
		rows = append(rows, [2]string{"throughput", fmt.Sprintf("%s while fetching chunks = %.0f%% of the peers' summed link rate",
			progressui.Rate(bps), 100*bps/(float64(len(net.Nodes))*float64(rate)))})
	}
	bfLine := fmt.Sprintf("%d blocks (heights %d down to %d) in %s", bf.Blocks, bf.From, bf.To, bf.Duration.Round(time.Millisecond))
	if bf.Err != nil {
		bfLine += fmt.Sprintf(", failed (not fatal): %v", bf.Err)
	}
	rows = append(rows,
		[2]string{"backfill", bfLine},
		[2]string{"final", fmt.Sprintf("height %d, blocks and app hash %X… match %s", m.Height(), m.App.AppHash()[:8], v.Name)},
		[2]string{"total", time.Since(started).Round(100 * time.Millisecond).String()},
	)
	for _, row := range rows {
		fmt.Printf("    %-11s %s\n", row[0], row[1])
	}
	if bf.Err != nil {
		return errors.New("backfill failed")
	}
	return nil
}
