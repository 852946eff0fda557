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
// --home defaults to $CMTHOME if set, else ~/.statesyncd. The exit status
// is 2 for a bad command line (with the usage), 0 for -h.
//
// init writes config/config.toml (CometBFT's, with this module's keys added
// to its [statesync] section and CometBFT's comments on the keys read
// differently here replaced by ours), a node key, a private validator key and, if
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
	"io"
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

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/node"
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr, func() <-chan os.Signal {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		return sig
	}))
}

// cli runs the command line args (without the program's name) and returns
// the exit status: 0, 1 when the command failed (the cause on stderr), 2
// for a bad command line (with the usage). notify subscribes to the
// signals that stop a started node.
func cli(args []string, stdout, stderr io.Writer, notify func() <-chan os.Signal) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = runInit(args[1:], stdout, stderr)
	case "start":
		err = runStart(args[1:], notify(), stdout, stderr)
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "statesyncd: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		return 2 // the flag set printed the error and its usage
	case err != nil:
		fmt.Fprintf(stderr, "statesyncd: %v\n", err)
		return 1
	}
	return 0
}

// usageError is a bad command line, already reported with the usage.
type usageError struct{ error }

const usageText = `statesyncd: a CometBFT v0.40 full node with the statesync library's state sync

Usage:
  statesyncd init  [--home DIR] [--chain-id ID]
  statesyncd start [--home DIR] [--proxy_app ADDR|kvapp] [--kvapp-snapshot-interval N] [--kvapp-keys N]
  statesyncd init -h | start -h    the flags of a command

--home defaults to $CMTHOME if set, else ~/.statesyncd.
Configuration: DIR/config/config.toml; state sync in its [statesync] section
(CometBFT's keys plus use_p2p, discovery_timeout, chunk_window, backfill, ...).
`

func usage(w io.Writer) { fmt.Fprint(w, usageText) }

// newFlagSet is a flag set for a command that reports errors and -h on
// stderr with the command's usage line.
func newFlagSet(cmd, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("statesyncd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: statesyncd %s %s\n\n--home defaults to $CMTHOME if set, else ~/.statesyncd.\n\nFlags:\n",
			cmd, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args into fs; a bad command line is a usageError.
func parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		fs.Usage()
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return usageError{err}
	}
	return err
}

func defaultHome() string {
	if h := os.Getenv("CMTHOME"); h != "" {
		return h
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".statesyncd")
}

// runInit writes a home directory: config, keys and (if missing) genesis.
func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "[--home DIR] [--chain-id ID]", stderr)
	home := fs.String("home", defaultHome(), "node home directory")
	chainID := fs.String("chain-id", "", "chain ID of a new one-validator genesis (default: random)")
	if err := parse(fs, args); err != nil {
		return err
	}

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
	fmt.Fprintf(stdout, "initialised %s (node ID %s)\n", *home, nodeKey.ID())
	return nil
}

func newLogger(cfg *cmtcfg.Config, w io.Writer) (log.Logger, error) {
	var logger log.Logger
	if cfg.LogFormat == cmtcfg.LogFormatJSON {
		logger = log.NewTMJSONLogger(log.NewSyncWriter(w))
	} else {
		logger = log.NewTMLogger(log.NewSyncWriter(w))
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
func runStart(args []string, sig <-chan os.Signal, stdout, stderr io.Writer) error {
	fs := newFlagSet("start", "[--home DIR] [--proxy_app ADDR|kvapp] [--kvapp-snapshot-interval N] [--kvapp-keys N]", stderr)
	home := fs.String("home", defaultHome(), "node home directory")
	proxyApp := fs.String("proxy_app", "", "ABCI app address (tcp://..., unix://...), a CometBFT built-in "+
		"(kvstore, noop), or kvapp (this module's in-process test app with snapshots); default: config.toml's proxy_app")
	interval := fs.Int64("kvapp-snapshot-interval", 100, "with --proxy_app kvapp: take a snapshot every N blocks")
	kvKeys := fs.Int("kvapp-keys", 4096, "with --proxy_app kvapp: keys of 1 KiB in the initial state (the same on every node)")
	if err := parse(fs, args); err != nil {
		return err
	}

	cfg, ss, err := loadConfig(*home)
	if err != nil {
		return err
	}
	if *proxyApp != "" {
		cfg.ProxyApp = *proxyApp
	}
	logger, err := newLogger(cfg, stdout)
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
		logged := make(chan struct{})
		go func() {
			defer close(logged)
			logProgress(ctx, logger, progress, n, progressEvery)
		}()
		defer func() { stop(); <-logged }() // the logger's goroutine ends before runStart
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
