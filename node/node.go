package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/statesync/statesync"
)

// ReactorName is the name our Reactor is registered under on the node's
// switch: CometBFT's own name for its state sync reactor, which it replaces.
const ReactorName = "STATESYNC"

// Errors returned by New, and wrapped by Err when the node stopped itself.
var (
	// ErrInvalidOptions: Options are missing something or contradict each
	// other; the message names the field.
	ErrInvalidOptions = errors.New("node: invalid options")
	// ErrStateSyncFailed: Sync returned an error and the node was stopped.
	// Err wraps both this and the Reactor's error (errors.Is works on both).
	ErrStateSyncFailed = errors.New("state sync failed")
	// ErrHandoverFailed: the restore succeeded but block sync could not be
	// enabled; the node was stopped.
	ErrHandoverFailed = errors.New("handing over to block sync failed")
)

// Options are what New needs: the arguments of CometBFT's node.NewNode plus
// our state sync config.
type Options struct {
	// Config is the node's CometBFT config. It is copied: New does not
	// modify it. Its [statesync] section is ignored except as described on
	// StateSync.
	Config *cmtcfg.Config
	// StateSync configures our Reactor; its Enable decides whether the node
	// state syncs at boot. Zero value: statesync.FromCometBFT(Config.StateSync).
	StateSync *statesync.Config

	PrivValidator types.PrivValidator // required (CometBFT needs one even on a full node)
	NodeKey       *p2p.NodeKey        // required
	ClientCreator proxy.ClientCreator // required: how to reach the app
	// Genesis provides the genesis doc. Default: the config's genesis file.
	Genesis cmtnode.GenesisDocProvider
	// DBProvider opens the node's databases. Default: cmtcfg.DefaultDBProvider.
	DBProvider cmtcfg.DBProvider
	// Metrics provides CometBFT's metrics. Default:
	// cmtnode.DefaultMetricsProvider(Config.Instrumentation).
	Metrics cmtnode.MetricsProvider
	// Registerer receives our Reactor's metrics (namespace
	// Config.Instrumentation.Namespace). nil: prometheus.DefaultRegisterer
	// when Config.Instrumentation.Prometheus is set (CometBFT serves that
	// registry), else no metrics are exported.
	Registerer prometheus.Registerer
	// StateProvider, if set, replaces the one our Reactor builds from the
	// config (RPC servers, or peers with use_p2p).
	StateProvider statesync.StateProvider
	// Logger defaults to a no-op logger.
	Logger log.Logger
	// NodeOptions are passed on to CometBFT's node.NewNode (after ours).
	// Do not replace "STATESYNC" with them.
	NodeOptions []cmtnode.Option
}

// SyncResult tells what the boot-time state sync did.
type SyncResult struct {
	// Synced is false when the node did not state sync (disabled, it
	// already had state, or it fell back to block sync); the other fields
	// are then zero, but for FellBack, State and the durations.
	Synced bool
	// State is the state the node was bootstrapped with.
	State sm.State
	// FellBack is true when no snapshot could be had and the node fell
	// back to block sync from genesis (on_no_snapshot = "blocksync"); State
	// is then the genesis state.
	FellBack bool
	// Restore is how long Sync took (restore and bootstrap), Total until
	// the handover to block sync. Backfill runs after the handover, in the
	// background (Node.WaitBackfill).
	Restore, Total time.Duration
}

// Node is a CometBFT node with our state sync. Create it with New, then
// Start; it runs until Stop or until a failed state sync stops it.
type Node struct {
	cmt     *cmtnode.Node
	reactor *statesync.Reactor
	logger  log.Logger
	cfg     statesync.Config
	stateDB dbm.DB
	blockDB dbm.DB
	sync    bool
	metrics *statesync.Metrics
	booted  int64 // the state's height when New ran

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mtx      sync.Mutex
	started  bool // Start was called
	ran      bool // the CometBFT node started
	released bool
	stopping bool
	err      error
	result   SyncResult

	done     chan struct{}
	doneOnce sync.Once
	synced   chan struct{}
}

// New builds the CometBFT node (node.NewNode) with our Reactor registered
// as "STATESYNC". It does not start it.
func New(o Options) (*Node, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = log.NewNopLogger()
	}
	ssCfg := statesync.FromCometBFT(o.Config.StateSync)
	if o.StateSync != nil {
		ssCfg = *o.StateSync
	}
	if err := ssCfg.ValidateBasic(); err != nil {
		return nil, err
	}

	// A copy of the config whose [statesync] section parks CometBFT's
	// reactor: enabled exactly when we sync (so that block sync and
	// consensus wait for us), no discovery (its Sync returns at once).
	cfg := *o.Config
	cmtSS := *o.Config.StateSync
	cmtSS.Enable = ssCfg.Enable
	cmtSS.DiscoveryTime = 0
	cfg.StateSync = &cmtSS

	metricsReg := o.Registerer
	if metricsReg == nil && cfg.Instrumentation != nil && cfg.Instrumentation.Prometheus {
		metricsReg = prometheus.DefaultRegisterer
	}
	metrics := statesync.NopMetrics()
	if metricsReg != nil {
		ns := "cometbft"
		if cfg.Instrumentation != nil && cfg.Instrumentation.Namespace != "" {
			ns = cfg.Instrumentation.Namespace
		}
		var err error
		if metrics, err = statesync.NewMetrics(metricsReg, ns); err != nil {
			return nil, fmt.Errorf("registering state sync metrics: %w", err)
		}
	}

	genesis := o.Genesis
	if genesis == nil {
		genesis = cmtnode.DefaultGenesisDocProviderFunc(&cfg)
	}
	dbProvider := o.DBProvider
	if dbProvider == nil {
		dbProvider = cmtcfg.DefaultDBProvider
	}
	metricsProvider := o.Metrics
	if metricsProvider == nil {
		metricsProvider = cmtnode.DefaultMetricsProvider(cfg.Instrumentation)
	}

	n := &Node{logger: logger, cfg: ssCfg, metrics: metrics, done: make(chan struct{}), synced: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	capture := n.captureDBs(dbProvider, logger)

	var optErr error
	replace := func(cn *cmtnode.Node) {
		optErr = n.install(cn, ssCfg, o, metrics, logger)
	}
	opts := append([]cmtnode.Option{cmtnode.StateProvider(placeholderProvider{}), replace}, o.NodeOptions...)

	cn, err := cmtnode.NewNode(&cfg, o.PrivValidator, o.NodeKey, o.ClientCreator, genesis, capture,
		metricsProvider, stopNoise{logger}, opts...)
	if err != nil {
		// NewNode does not close what it opened before failing.
		for _, db := range []dbm.DB{n.stateDB, n.blockDB} {
			if db != nil {
				_ = db.Close()
			}
		}
		return nil, err
	}
	n.cmt = cn
	if optErr != nil {
		n.release()
		return nil, optErr
	}
	if r, ok := cn.Switch().Reactor(ReactorName); !ok || r != p2p.Reactor(n.reactor) {
		n.release()
		return nil, fmt.Errorf("%w: NodeOptions replaced the %s reactor", ErrInvalidOptions, ReactorName)
	}
	return n, nil
}

func (o Options) check() error {
	switch {
	case o.Config == nil:
		return fmt.Errorf("%w: Config is required", ErrInvalidOptions)
	case o.Config.StateSync == nil || o.Config.P2P == nil || o.Config.BlockSync == nil:
		return fmt.Errorf("%w: Config must have its StateSync, P2P and BlockSync sections", ErrInvalidOptions)
	case o.PrivValidator == nil:
		return fmt.Errorf("%w: PrivValidator is required", ErrInvalidOptions)
	case o.NodeKey == nil:
		return fmt.Errorf("%w: NodeKey is required", ErrInvalidOptions)
	case o.ClientCreator == nil:
		return fmt.Errorf("%w: ClientCreator is required", ErrInvalidOptions)
	case o.Config.P2P.LibP2PEnabled():
		return fmt.Errorf("%w: p2p.libp2p is enabled, but CometBFT's libp2p switch ignores custom reactors "+
			"(its AddReactor is a no-op), so the state sync reactor cannot be replaced there", ErrInvalidOptions)
	}
	return nil
}

// install runs as a node.Option at the end of NewNode: it builds our
// Reactor from the node's parts, registers it as STATESYNC and parks the
// built-in one.
func (n *Node) install(cn *cmtnode.Node, ssCfg statesync.Config, o Options, metrics *statesync.Metrics, logger log.Logger) error {
	if n.stateDB == nil || n.blockDB == nil {
		return fmt.Errorf("%w: DBProvider did not open the state and block DBs", ErrInvalidOptions)
	}
	sw := cn.Switch()
	old, ok := sw.Reactor(ReactorName)
	if !ok {
		return fmt.Errorf("%w: the node has no %s reactor to replace", ErrInvalidOptions, ReactorName)
	}
	genDoc := cn.GenesisDoc()
	genState, err := sm.MakeGenesisState(genDoc)
	if err != nil {
		return fmt.Errorf("genesis state: %w", err)
	}
	stateStore := sm.NewStore(n.stateDB, sm.StoreOptions{DiscardABCIResponses: cn.Config().Storage.DiscardABCIResponses})
	loaded, err := stateStore.Load()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	pub, err := cn.PrivValidator().GetPubKey()
	if err != nil {
		return fmt.Errorf("private validator key: %w", err)
	}
	// CometBFT's own decision (node.NewNode): state sync when enabled, with
	// no state yet, unless we are the only validator.
	n.sync = ssCfg.Enable && loaded.LastBlockHeight == 0 && !onlyValidatorIsUs(genState, pub.Address())
	n.booted = loaded.LastBlockHeight

	r, err := statesync.NewReactor(ssCfg, statesync.Deps{
		Snapshots:     cn.ProxyApp().Snapshot(),
		Query:         cn.ProxyApp().Query(),
		StateStore:    stateStore,
		BlockStore:    cn.BlockStore(),
		Backfill:      statesync.NewDBBackfillStore(n.blockDB, n.stateDB),
		Genesis:       genState,
		StateProvider: o.StateProvider,
		Logger:        logger.With("module", "statesync"),
		Metrics:       metrics,
	})
	if err != nil {
		return err
	}
	n.reactor = r

	cmtnode.CustomReactors(map[string]p2p.Reactor{ReactorName: r})(cn)
	// The node still holds the old reactor and calls its Sync from Start
	// when state sync is enabled: give it a switch whose broadcast goes
	// nowhere (CustomReactors set it to nil), and a silent logger.
	old.SetSwitch(parkedSwitch{Switcher: sw})
	old.SetLogger(log.NewNopLogger())
	return nil
}

func onlyValidatorIsUs(state sm.State, addr []byte) bool {
	if state.Validators.Size() != 1 {
		return false
	}
	v, _ := state.Validators.GetByIndex(0)
	return bytes.Equal(v, addr)
}

// Start starts the CometBFT node and, if the node state syncs, the
// restore: Sync (restore and bootstrap), then at once the handover to block
// sync, while the backfill runs in the background. A node that was
// state-synced before (a restart) continues an unfinished backfill. Start
// returns once the node is running; a failed restore stops it later (see
// Done and Err).
func (n *Node) Start() error {
	n.mtx.Lock()
	switch {
	case n.stopping:
		n.mtx.Unlock()
		return errors.New("node: stopped")
	case n.started:
		n.mtx.Unlock()
		return errors.New("node: already started")
	}
	n.started = true
	n.mtx.Unlock()
	if err := n.cmt.Start(); err != nil {
		n.release()
		n.finish(err)
		return err
	}
	n.mtx.Lock()
	n.ran = true
	n.mtx.Unlock()
	if !n.sync {
		close(n.synced)
		if n.booted > 0 {
			n.resumeBackfill()
		}
		return nil
	}
	n.wg.Add(1)
	go func() { // owned by n.wg: Stop waits for it
		defer n.wg.Done()
		n.run()
		if n.Err() != nil {
			n.stopAfterFailure()
		}
	}()
	return nil
}

// resumeBackfill continues the backfill of a node state-synced before a
// restart (never fatal), and removes the spools a killed sync left.
func (n *Node) resumeBackfill() {
	removeStaleSpools(n.cfg.TempDir, n.logger)
	if !n.cfg.Backfill {
		return
	}
	state, err := n.StateStore().Load()
	if err == nil {
		_, err = n.reactor.ResumeBackfill(state)
	}
	if err != nil {
		n.logger.Error("Cannot resume the backfill; the node continues without full evidence history", "err", err)
	}
}

// run restores and hands over; on failure it falls back to block sync or
// stops the node.
func (n *Node) run() {
	start := time.Now()
	n.logger.Info("Starting state sync", "use_p2p", n.cfg.UseP2P, "backfill", n.cfg.Backfill)
	state, err := n.reactor.Sync(n.ctx)
	if err != nil {
		switch {
		case n.ctx.Err() != nil:
			return // stopped
		case n.cfg.OnNoSnapshot == statesync.OnNoSnapshotBlockSync &&
			(errors.Is(err, statesync.ErrNoSnapshots) || errors.Is(err, statesync.ErrAllSnapshotsRejected)):
			n.fallBack(err, start)
		default:
			n.fail(fmt.Errorf("%w: %w", ErrStateSyncFailed, err))
		}
		return
	}
	res := SyncResult{Synced: true, State: state, Restore: time.Since(start)}
	n.logger.Info("State sync restored the app", "height", state.LastBlockHeight, "took", res.Restore)
	removeStaleSpools(n.cfg.TempDir, n.logger)
	if n.ctx.Err() != nil {
		return // stopping: the stores are bootstrapped, the next boot block-syncs
	}
	n.complete(res, state, start)
}

// complete hands over to block sync and publishes res.
func (n *Node) complete(res SyncResult, state sm.State, start time.Time) {
	if err := n.handover(state); err != nil {
		n.fail(fmt.Errorf("%w: %w", ErrHandoverFailed, err))
		return
	}
	res.Total = time.Since(start)
	n.mtx.Lock()
	n.result = res
	n.mtx.Unlock()
	close(n.synced)
}

// handover switches the node from state sync to block sync, as CometBFT's
// node does after its own state sync.
func (n *Node) handover(state sm.State) error {
	type blocksyncEnabler interface{ Enable(sm.State) error }
	type mempoolEnabler interface{ EnableInOutTxs() }
	bc, ok := n.cmt.Switch().Reactor("BLOCKSYNC")
	if !ok {
		return errors.New("the node has no BLOCKSYNC reactor")
	}
	enabler, ok := bc.(blocksyncEnabler)
	if !ok {
		return fmt.Errorf("the BLOCKSYNC reactor (%T) cannot be enabled", bc)
	}
	if n.cmt.Config().BlockSync.AdaptiveSync {
		// Adaptive sync feeds blocks through consensus: switch it out of
		// wait-sync first, and the mempool with it.
		n.cmt.ConsensusReactor().SwitchToConsensus(state, true)
		if m, ok := n.cmt.MempoolReactor().(mempoolEnabler); ok {
			m.EnableInOutTxs()
		}
	}
	n.logger.Info("Handing over to block sync", "height", state.LastBlockHeight)
	return enabler.Enable(state)
}

// fail records err; once run returns, its goroutine stops the node
// (stopAfterFailure).
func (n *Node) fail(err error) {
	n.logger.Error("Stopping the node", "err", err)
	n.mtx.Lock()
	if n.err == nil {
		n.err = err
	}
	n.mtx.Unlock()
}

// stopAfterFailure stops the node on run's goroutine after run failed: what
// Stop does, except waiting for n.wg, which that goroutine is part of. If
// a Stop is already under way, it does the stopping once this goroutine
// has returned.
func (n *Node) stopAfterFailure() {
	if !n.claimStop() {
		return
	}
	n.cancel()
	_ = n.shutdown()
}

// Stop cancels a running state sync, stops the CometBFT node and the app
// connections, and waits for them and for every goroutine the node
// started. Idempotent; safe from any goroutine.
func (n *Node) Stop() error {
	if !n.claimStop() {
		<-n.done
		n.wg.Wait() // run's goroutine, if it did the stopping, is returning
		return nil
	}
	n.cancel()
	n.wg.Wait()
	return n.shutdown()
}

// claimStop reports whether the caller is the first to stop the node.
func (n *Node) claimStop() bool {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	if n.stopping {
		return false
	}
	n.stopping = true
	return true
}

// shutdown stops the CometBFT node (if it ran) and releases what New
// started, then closes Done. Run goroutines must have ended or be the
// caller.
func (n *Node) shutdown() error {
	n.mtx.Lock()
	started := n.ran
	n.mtx.Unlock()
	var err error
	if started && n.cmt.IsRunning() {
		err = n.cmt.Stop()
	}
	n.release()
	n.finish(nil)
	return err
}

// release stops what NewNode started and the node's Stop leaves running:
// when the node never ran (or failed to start), what its OnStop would have
// stopped; in any case the proxy app connections, whose watcher goroutine
// would otherwise outlive the node.
func (n *Node) release() {
	n.cancel()
	n.mtx.Lock()
	ran, released := n.ran, n.released
	n.released = true
	n.mtx.Unlock()
	if n.cmt == nil || released {
		return
	}
	if !ran {
		StopUnstarted(n.cmt)
		if n.stateDB != nil {
			_ = n.stateDB.Close()
		}
	}
	if n.cmt.ProxyApp().IsRunning() {
		_ = n.cmt.ProxyApp().Stop()
	}
}

// StopUnstarted releases what node.NewNode started in a CometBFT node whose
// Start was never called or failed (its OnStop does not run then): the
// event bus (and with it the indexer), the stores and the evidence pool.
// It does not call the node's OnStop, which would close the p2p transport
// a second time (a panic) when Start failed after listening. The proxy app
// connections are left to the caller.
func StopUnstarted(cn *cmtnode.Node) {
	if cn.EventBus().IsRunning() {
		_ = cn.EventBus().Stop()
	}
	_ = cn.BlockStore().Close()
	if ep := cn.EvidencePool(); ep != nil {
		_ = ep.Close()
	}
}

func (n *Node) finish(err error) {
	n.doneOnce.Do(func() {
		n.mtx.Lock()
		if n.err == nil {
			n.err = err
		}
		n.mtx.Unlock()
		close(n.done)
	})
}

// Done is closed when the node has stopped: after Stop, or after a failed
// state sync stopped it.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the node stopped itself (wrapping ErrStateSyncFailed or
// ErrHandoverFailed and the cause), or nil.
func (n *Node) Err() error {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	return n.err
}

// Wait blocks until the node stops or ctx ends, and returns Err (or
// ctx.Err()).
func (n *Node) Wait(ctx context.Context) error {
	select {
	case <-n.done:
		return n.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Synced is closed once the node has restored and handed over to block
// sync (or fell back to block sync from genesis), or at Start when it does
// not state sync. It is never closed if the state sync fails (Done is).
// The backfill may still run then (WaitBackfill).
func (n *Node) Synced() <-chan struct{} { return n.synced }

// SyncResult reports the boot-time state sync (zero until Synced).
func (n *Node) SyncResult() SyncResult {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	return n.result
}

// WaitBackfill waits for the background backfill (after a state sync, or
// resumed after a restart) to end and returns its result; nil, nil if
// none was started (yet: it starts at the handover). A failed backfill is
// never fatal: its Err says why, and a restart continues it.
func (n *Node) WaitBackfill(ctx context.Context) (*statesync.BackfillResult, error) {
	return n.reactor.WaitBackfill(ctx)
}

// StateSyncing reports whether the node state syncs at boot (decided in
// New, as CometBFT decides it).
func (n *Node) StateSyncing() bool { return n.sync }

// Metrics are our Reactor's metrics (also exported when Options give a
// registerer).
func (n *Node) Metrics() *statesync.Metrics { return n.metrics }

// Reactor is our state sync Reactor (Subscribe for progress).
func (n *Node) Reactor() *statesync.Reactor { return n.reactor }

// CometBFT is the underlying CometBFT node.
func (n *Node) CometBFT() *cmtnode.Node { return n.cmt }

// StateStore returns a state store over the node's own state DB.
func (n *Node) StateStore() sm.Store {
	return sm.NewStore(n.stateDB, sm.StoreOptions{DiscardABCIResponses: n.cmt.Config().Storage.DiscardABCIResponses})
}
