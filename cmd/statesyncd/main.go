// Command statesyncd is a CometBFT v0.40 full node whose state sync is
// this module's: it serves snapshots, chunks, light blocks and consensus
// params to its peers, and, started without state and with
// [statesync] enable = true, restores from a snapshot (over RPC-verified or
// P2P-verified light blocks), hands over to block sync, and backfills in
// the background.
//
// Usage:
//
//	statesyncd init  [--home DIR] [--chain-id ID]
//	statesyncd start [--home DIR] [--proxy_app ADDR|kvapp] [--kvapp-snapshot-interval N] [--kvapp-keys N]
//
// init writes config/config.toml (CometBFT's, with this module's keys added
// to its [statesync] section), a node key, a private validator key and, if
// there is none, a one-validator genesis. start runs the node until
// SIGINT/SIGTERM, or until a failed state sync stops it; the exit status is
// 1, with the cause on stderr, whenever the node or its state sync failed,
// also when a signal stopped it (see runStart). See README.md beside this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/cli/flags"
	"github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"
	"github.com/spf13/viper"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/progressui"
	"github.com/statesync/statesync/node"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "init":
		err = runInit(os.Args[2:])
	case "start":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		err = runStart(os.Args[2:], sig)
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "statesyncd: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `statesyncd: a CometBFT v0.40 full node with the statesync library's state sync

  statesyncd init  [--home DIR] [--chain-id ID]
  statesyncd start [--home DIR] [--proxy_app ADDR|kvapp] [--kvapp-snapshot-interval N]

Configuration: DIR/config/config.toml; state sync in its [statesync] section
(CometBFT's keys plus use_p2p, discovery_timeout, chunk_window, backfill, ...).
`)
}

func defaultHome() string {
	if h := os.Getenv("CMTHOME"); h != "" {
		return h
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".statesyncd")
}

// runInit writes a home directory: config, keys and (if missing) genesis.
func runInit(args []string) error {
	fs := flag.NewFlagSet("init", flag.ExitOnError)
	home := fs.String("home", defaultHome(), "node home directory")
	chainID := fs.String("chain-id", "", "chain ID of a new one-validator genesis (default: random)")
	_ = fs.Parse(args)

	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(*home)
	cmtcfg.EnsureRoot(*home) // writes CometBFT's default config.toml if missing
	cfgFile := filepath.Join(*home, "config", "config.toml")
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "use_p2p") {
		out, err := withOurKeys(string(b), statesync.DefaultConfig())
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfgFile, []byte(out), 0o644); err != nil {
			return err
		}
	}
	pv := privval.LoadOrGenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
	nodeKey, err := p2p.LoadOrGenNodeKey(cfg.NodeKeyFile())
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg.GenesisFile()); errors.Is(err, os.ErrNotExist) {
		id := *chainID
		if id == "" {
			id = fmt.Sprintf("test-chain-%d", time.Now().Unix()%1_000_000)
		}
		pub, err := pv.GetPubKey()
		if err != nil {
			return err
		}
		gen := types.GenesisDoc{
			ChainID: id, GenesisTime: cmttime.Now(), ConsensusParams: types.DefaultConsensusParams(),
			Validators: []types.GenesisValidator{{Address: pub.Address(), PubKey: pub, Power: 10}},
		}
		gen.ConsensusParams.Version.App = 1
		if err := gen.SaveAs(cfg.GenesisFile()); err != nil {
			return err
		}
	}
	fmt.Printf("initialised %s (node ID %s)\n", *home, nodeKey.ID())
	return nil
}

// withOurKeys inserts this module's [statesync] keys at the end of the
// [statesync] section of a CometBFT config.toml.
func withOurKeys(toml string, c statesync.Config) (string, error) {
	start := strings.Index(toml, "\n[statesync]\n")
	if start < 0 {
		return "", errors.New("config.toml has no [statesync] section")
	}
	end := strings.Index(toml[start+1:], "\n[")
	if end < 0 {
		end = len(toml)
	} else {
		end += start + 1
		// Keep the next section's banner comments with it.
		if i := strings.LastIndex(toml[start:end], "\n\n"); i >= 0 {
			end = start + i + 1
		}
	}
	keys := fmt.Sprintf(`
# ---- statesync library (github.com/statesync/statesync) ----
# Verify snapshots with light blocks and consensus params fetched from at
# least 2 peers (channels 0x62/0x63) instead of rpc_servers.
use_p2p = %t
# Bound on the search for a usable snapshot; then state sync fails and the
# node stops with the error, or, with on_no_snapshot = "blocksync", block-syncs
# from genesis.
discovery_timeout = %q
on_no_snapshot = %q
# Chunk requests in flight per peer (every peer advertising the snapshot is used).
chunk_window = %d
# Bound on every light-client verification, and on one light-block request.
verify_timeout = %q
light_block_timeout = %q
# Serving: worker goroutines, requests of one peer served at once, and
# queued or running (more are dropped).
serve_workers = %d
serve_per_peer = %d
serve_queue_per_peer = %d
# After restoring, fetch and verify headers back to the evidence horizon, in
# the background (from peers serving light blocks, else from rpc_servers).
backfill = %t
backfill_window = %d
`, c.UseP2P, c.DiscoveryTimeout, c.OnNoSnapshot, c.ChunkWindow, c.VerifyTimeout, c.LightBlockTimeout,
		c.ServeWorkers, c.ServePerPeer, c.ServeQueuePerPeer, c.Backfill, c.BackfillWindow)
	return toml[:end] + keys + toml[end:], nil
}

// loadConfig reads home/config/config.toml into CometBFT's config and ours.
func loadConfig(home string) (*cmtcfg.Config, statesync.Config, error) {
	v := viper.New()
	v.SetConfigFile(filepath.Join(home, "config", "config.toml"))
	if err := v.ReadInConfig(); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("reading config (run `statesyncd init --home %s` first?): %w", home, err)
	}
	cfg := cmtcfg.DefaultConfig()
	if err := v.Unmarshal(cfg); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("parsing config.toml: %w", err)
	}
	cfg.SetRoot(home)
	// Ours starts from CometBFT's [statesync] keys, then reads our own
	// from the same section.
	ss := statesync.FromCometBFT(cfg.StateSync)
	if err := v.UnmarshalKey("statesync", &ss); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("parsing [statesync]: %w", err)
	}
	// CometBFT's own check of [statesync] insists on rpc_servers even with
	// use_p2p: leave that section to ours (node.New validates it).
	check := *cfg
	css := *cfg.StateSync
	css.Enable = false
	check.StateSync = &css
	if err := check.ValidateBasic(); err != nil {
		return nil, statesync.Config{}, fmt.Errorf("config.toml: %w", err)
	}
	return cfg, ss, nil
}

func newLogger(cfg *cmtcfg.Config) (log.Logger, error) {
	var logger log.Logger
	if cfg.LogFormat == cmtcfg.LogFormatJSON {
		logger = log.NewTMJSONLogger(log.NewSyncWriter(os.Stdout))
	} else {
		logger = log.NewTMLogger(log.NewSyncWriter(os.Stdout))
	}
	return flags.ParseLogLevel(cfg.LogLevel, logger, cmtcfg.DefaultLogLevel)
}

// runStart runs a node until it stops itself or a signal arrives on sig.
// It returns an error (exit status 1, the error on stderr) whenever the
// node or its state sync failed, also when a signal stopped it: a state
// sync that failed or had not finished, or a node that stopped itself
// with an error, or an app connection that failed (when the app dies,
// CometBFT sends SIGTERM to its own process, so a signal may be how an
// app failure shows). Only a node stopped by a signal with none of those
// returns nil.
func runStart(args []string, sig <-chan os.Signal) error {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	home := fs.String("home", defaultHome(), "node home directory")
	proxyApp := fs.String("proxy_app", "", "ABCI app address (tcp://..., unix://...), a CometBFT built-in "+
		"(kvstore, noop), or kvapp (this module's in-process test app with snapshots); default: config.toml's proxy_app")
	interval := fs.Int64("kvapp-snapshot-interval", 100, "with --proxy_app kvapp: take a snapshot every N blocks")
	kvKeys := fs.Int("kvapp-keys", 4096, "with --proxy_app kvapp: keys of 1 KiB in the initial state (the same on every node)")
	_ = fs.Parse(args)

	cfg, ss, err := loadConfig(*home)
	if err != nil {
		return err
	}
	if *proxyApp != "" {
		cfg.ProxyApp = *proxyApp
	}
	logger, err := newLogger(cfg)
	if err != nil {
		return err
	}
	var cc proxy.ClientCreator
	if cfg.ProxyApp == "kvapp" {
		cc = proxy.NewLocalClientCreator(kvapp.New(kvapp.Options{
			Keys: *kvKeys, ValueSize: 1024, ChunkSize: 1 << 20, SnapshotInterval: *interval,
		}))
	} else {
		cc = proxy.DefaultClientCreator(cfg.ProxyApp, cfg.ABCI, cfg.DBDir())
	}
	nodeKey, err := p2p.LoadNodeKey(cfg.NodeKeyFile())
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	pv := privval.LoadOrGenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())

	n, err := node.New(node.Options{
		Config: cfg, StateSync: &ss, PrivValidator: pv, NodeKey: nodeKey, ClientCreator: cc,
		Genesis: cmtnode.DefaultGenesisDocProviderFunc(cfg), Logger: logger,
	})
	if err != nil {
		return err
	}
	progress, cancelProgress := n.Reactor().Subscribe()
	defer cancelProgress()
	if err := n.Start(); err != nil {
		return err
	}
	logger.Info("Started node", "id", nodeKey.ID(), "state_sync", n.StateSyncing(), "use_p2p", ss.UseP2P)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if n.StateSyncing() {
		go logProgress(ctx, logger, progress, n)
	}
	select {
	case s := <-sig:
		logger.Info("Stopping on signal", "signal", s)
		stop()
		return stoppedBySignal(n, s)
	case <-n.Done():
		return n.Err()
	}
}

// stoppedBySignal stops n after signal s and says whether the node had
// failed: its own error, an app connection's error, or a state sync that
// had not finished.
func stoppedBySignal(n *node.Node, s os.Signal) error {
	synced := false
	select {
	case <-n.Synced():
		synced = true
	default:
	}
	appErr := appConnError(n)
	stopErr := n.Stop()
	switch {
	case n.Err() != nil:
		return n.Err()
	case appErr != nil:
		return fmt.Errorf("stopped on %v after the app connection failed: %w", s, appErr)
	case !synced:
		return fmt.Errorf("stopped on %v before state sync finished (phase %s)", s, n.Reactor().Progress().Phase)
	case stopErr != nil:
		return fmt.Errorf("stopping on %v: %w", s, stopErr)
	}
	return nil
}

// appConnError returns the first error of the node's app connections.
func appConnError(n *node.Node) error {
	pa := n.CometBFT().ProxyApp()
	for _, c := range []interface{ Error() error }{pa.Consensus(), pa.Mempool(), pa.Query(), pa.Snapshot()} {
		if err := c.Error(); err != nil {
			return err
		}
	}
	return nil
}

// logProgress logs the state sync's progress: every change of phase and,
// within a phase, every 5 s; then the outcome.
func logProgress(ctx context.Context, logger log.Logger, ch <-chan statesync.Progress, n *node.Node) {
	var (
		phase statesync.Phase
		last  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.Done():
			return
		case <-n.Synced():
			r := n.SyncResult()
			logger.Info("State sync complete; block sync running, backfill in the background",
				"height", r.State.LastBlockHeight, "fell_back", r.FellBack, "took", r.Total.Round(time.Millisecond))
			return
		case p := <-ch:
			if p.Phase != phase || time.Since(last) >= 5*time.Second {
				logger.Info("State sync: "+progressui.Line(p), "phase", p.Phase)
				phase, last = p.Phase, time.Now()
			}
		}
	}
}
