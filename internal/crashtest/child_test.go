package crashtest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

// Environment of a child (set by the parent).
const (
	envChild = "CRASHTEST_CHILD" // "1": TestMain runs a child node instead of the tests
	envHome  = "CRASHTEST_HOME"
	envP2P   = "CRASHTEST_P2P"
	envPeers = "CRASHTEST_PEERS"
	envTrust = "CRASHTEST_TRUST" // height:hash
	envPhase = "CRASHTEST_PHASE" // a progress phase to crash at (see hit)
	envMode  = "CRASHTEST_MODE"  // kill | stop
)

// App options shared by the network and the child.
var appOpts = kvapp.Options{Keys: 400, ValueSize: 1024, ChunkSize: 32 << 10, SnapshotInterval: 5, SnapshotKeep: 3}

// childConfig is the child's CometBFT config: localnet's settings, on
// disk.
func childConfig(home string) *cmtcfg.Config {
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	cfg.DBBackend = string("goleveldb")
	cfg.TxIndex.Indexer = "null"
	cfg.Instrumentation.Prometheus = false
	cfg.P2P.AllowDuplicateIP = true
	cfg.P2P.AddrBookStrict = false
	cfg.P2P.PexReactor = false
	cfg.P2P.PersistentPeersMaxDialPeriod = 0
	cfg.P2P.ListenAddress = os.Getenv(envP2P)
	cfg.P2P.PersistentPeers = os.Getenv(envPeers)
	cfg.RPC.ListenAddress = ""
	cfg.RPC.GRPCListenAddress = ""
	cfg.RPC.PprofListenAddress = ""
	cs := cfg.Consensus
	cs.TimeoutPropose = 2 * time.Second
	cs.TimeoutCommit = 200 * time.Millisecond
	cs.PeerGossipSleepDuration = 20 * time.Millisecond
	return cfg
}

// runChild runs the node of one child process and returns its exit
// status. It prints, on stdout, "HIT" when it reaches the crash phase,
// "BOOT sync=<bool>" once started, and every 50 ms a status line
// "STATUS key=value ...": store height h, app height apph and hash app,
// cs (consensus running), the backfill checkpoint (top, lowest, done),
// the last backfill run's from (-1: none ended) and its state bf.
func runChild() int {
	home := os.Getenv(envHome)
	cfg := childConfig(home)
	var trustH int64
	var trustHash string
	if _, err := fmt.Sscanf(os.Getenv(envTrust), "%d:%s", &trustH, &trustHash); err != nil {
		fmt.Fprintln(os.Stderr, "bad trust:", err)
		return 2
	}
	ss := localnet.FastConfig()
	ss.Enable, ss.UseP2P = true, true
	ss.TrustHeight, ss.TrustHash = trustH, trustHash
	ss.TempDir = filepath.Join(home, "spool")
	ss.DiscoveryTimeout = 20 * time.Second
	if err := os.MkdirAll(ss.TempDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logFile, err := os.OpenFile(filepath.Join(home, "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer logFile.Close()
	logger := log.NewFilter(log.NewTMLogger(log.NewSyncWriter(logFile)), log.AllowInfo())

	nodeKey, err := p2p.LoadOrGenNodeKey(cfg.NodeKeyFile())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pv := privval.LoadOrGenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
	ao := appOpts
	ao.Keys, ao.Dir = 0, filepath.Join(home, "data")
	app := kvapp.New(ao)
	n, err := node.New(node.Options{
		Config: cfg, StateSync: &ss, PrivValidator: pv, NodeKey: nodeKey,
		ClientCreator: proxy.NewLocalClientCreator(app), Genesis: cmtnode.DefaultGenesisDocProviderFunc(cfg),
		Logger: logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "node.New:", err)
		return 1
	}
	progress, unsubscribe := n.Reactor().Subscribe()
	defer unsubscribe()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	if err := n.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "Start:", err)
		return 1
	}
	fmt.Printf("BOOT sync=%t\n", n.StateSyncing())
	return childLoop(n, app, progress, sig)
}

func childLoop(n *node.Node, app *kvapp.App, progress <-chan statesync.Progress, sig <-chan os.Signal) int {
	phase, mode := os.Getenv(envPhase), os.Getenv(envMode)
	act := func() int {
		fmt.Println("HIT")
		if mode == "kill" {
			self, _ := os.FindProcess(os.Getpid())
			_ = self.Kill()
			select {}
		}
		return stop(n)
	}
	synced := n.Synced()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case p := <-progress:
			if hit(phase, p) {
				return act()
			}
		case <-synced:
			synced = nil
			if phase == "handover" {
				return act()
			}
		case <-sig:
			return stop(n)
		case <-n.Done():
			fmt.Fprintln(os.Stderr, "node stopped:", n.Err())
			return 1
		case <-tick.C:
			cp, _, _ := n.Reactor().BackfillCheckpoint()
			from := int64(-1)
			if res := n.Reactor().LastBackfill(); res != nil {
				from = res.From
			}
			fmt.Printf("STATUS h=%d apph=%d app=%X cs=%t top=%d lowest=%d done=%t from=%d bf=%s\n",
				n.CometBFT().BlockStore().Height(), app.Height(), app.AppHash(),
				!n.CometBFT().ConsensusReactor().WaitSync(), cp.Top, cp.Lowest, cp.Done, from, backfillState(n))
		}
	}
}

// hit reports whether progress p is the phase to crash at.
func hit(phase string, p statesync.Progress) bool {
	switch phase {
	case "discovery":
		return p.Phase == statesync.PhaseDiscovery
	case "fetching":
		return p.ChunksFetched >= 1
	case "applying":
		return p.ChunksApplied >= 1
	}
	return false
}

func stop(n *node.Node) int {
	if err := n.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "Stop:", err)
		return 1
	}
	if err := n.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "node failed:", err)
		return 1
	}
	fmt.Println("STOPPED")
	return 0
}

func backfillState(n *node.Node) string {
	if res := n.Reactor().LastBackfill(); res != nil {
		if res.Err != nil {
			return "failed:" + strconv.Quote(res.Err.Error())
		}
		return "done"
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // only look, do not wait
	if _, err := n.WaitBackfill(ctx); err != nil {
		return "running"
	}
	return "none"
}
