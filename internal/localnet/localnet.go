// Package localnet runs a real CometBFT v0.40 network in-process, on
// loopback TCP only: a validator set producing blocks with kvapp in live
// mode (a snapshot every SnapshotInterval blocks) and serving full nodes,
// each a complete CometBFT node built with node.NewNode — by default with
// this module's Reactor as STATESYNC (package node), or with CometBFT's
// built-in state sync reactor (Options.Stock) for interop tests.
//
// It is what the demo and the interop tests start, and what a joining node
// connects to (Join builds its config, keys and genesis).
//
// Databases are in memory; node homes (config, WAL, private validator
// state) live in a temporary directory removed by Stop. Ports are free
// loopback ports picked just before a node starts; a node whose port was
// taken in between is rebuilt on fresh ports.
package localnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	ssnode "github.com/statesync/statesync/node"
)

// Options describe the network.
type Options struct {
	ChainID    string // default "localnet"
	Validators int    // default 2
	FullNodes  int    // serving full nodes that do not validate; default 0
	// App is every node's app (all start from the same generated state).
	// SnapshotInterval defaults to 10, SnapshotKeep to 3.
	App kvapp.Options
	// TimeoutCommit defaults to 300 ms; the other consensus timeouts are
	// short and fixed.
	TimeoutCommit time.Duration
	// Stock runs CometBFT's built-in state sync reactor in every node of
	// the network instead of ours.
	Stock bool
	// RPC starts an RPC server on every node (for RPC state providers).
	RPC bool
	// Rate is every connection's send and receive rate (bytes/s); 0 keeps
	// CometBFT's default 5 120 000.
	Rate int64
	// Dir holds the node homes; "" makes a temporary directory that Stop
	// removes.
	Dir string
	// Logger receives every node's logs (with "node" set); nil discards.
	Logger log.Logger
	// ServeConfig is our Reactor's config in the network's nodes (Enable is
	// forced off). Default statesync.DefaultConfig().
	ServeConfig *statesync.Config
}

func (o *Options) defaults() {
	if o.ChainID == "" {
		o.ChainID = "localnet"
	}
	if o.Validators <= 0 {
		o.Validators = 2
	}
	if o.App.SnapshotInterval <= 0 {
		o.App.SnapshotInterval = 10
	}
	if o.App.SnapshotKeep <= 0 {
		o.App.SnapshotKeep = 3
	}
	if o.TimeoutCommit <= 0 {
		o.TimeoutCommit = 300 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
}

// Network is a started network.
type Network struct {
	opts    Options
	dir     string
	ownDir  bool
	Genesis *types.GenesisDoc
	// Nodes are the validators first, then the full nodes.
	Nodes []*Member

	mtx     sync.Mutex
	joined  []*Member
	stopped bool
}

// Member is one node of the network, or a joining node built with Join.
type Member struct {
	Name      string
	Home      string
	Validator bool
	Config    *cmtcfg.Config
	NodeKey   *p2p.NodeKey
	PrivVal   types.PrivValidator
	App       *kvapp.App

	ours  *ssnode.Node
	stock *cmtnode.Node

	stopOnce sync.Once
}

// P2PAddress is the member's id@127.0.0.1:port.
func (m *Member) P2PAddress() string {
	return p2p.IDAddressString(m.NodeKey.ID(), strings.TrimPrefix(m.Config.P2P.ListenAddress, "tcp://"))
}

// RPCAddress is the member's RPC server (http://127.0.0.1:port), or "".
func (m *Member) RPCAddress() string {
	if m.Config.RPC.ListenAddress == "" {
		return ""
	}
	return "http://" + strings.TrimPrefix(m.Config.RPC.ListenAddress, "tcp://")
}

// CometBFT is the member's CometBFT node.
func (m *Member) CometBFT() *cmtnode.Node {
	if m.ours != nil {
		return m.ours.CometBFT()
	}
	return m.stock
}

// Node is the member's node with our state sync (nil for a stock member).
func (m *Member) Node() *ssnode.Node { return m.ours }

// Height is the height of the member's block store.
func (m *Member) Height() int64 { return m.CometBFT().BlockStore().Height() }

// BlockStore is the member's block store.
func (m *Member) BlockStore() *store.BlockStore { return m.CometBFT().BlockStore() }

// Stop stops the member's node (idempotent).
func (m *Member) Stop() error {
	var err error
	m.stopOnce.Do(func() {
		if m.ours != nil {
			err = m.ours.Stop()
			return
		}
		if m.stock != nil {
			err = stopStock(m.stock)
		}
	})
	return err
}

// stopStock stops a CometBFT node and the app connections its Stop leaves
// running.
func stopStock(n *cmtnode.Node) error {
	var err error
	if n.IsRunning() {
		err = n.Stop()
	}
	if n.ProxyApp().IsRunning() {
		_ = n.ProxyApp().Stop()
	}
	return err
}

// Start starts the network: genesis, then each validator and full node in
// turn, each dialling the ones started before it (as persistent peers). It
// returns once all are started (not once blocks are produced: WaitHeight).
func Start(ctx context.Context, o Options) (_ *Network, err error) {
	o.defaults()
	n := &Network{opts: o, dir: o.Dir}
	if n.dir == "" {
		if n.dir, err = os.MkdirTemp("", "localnet-"); err != nil {
			return nil, err
		}
		n.ownDir = true
	}
	defer func() {
		if err != nil {
			_ = n.Stop()
		}
	}()

	total := o.Validators + o.FullNodes
	members := make([]*Member, total)
	gen := &types.GenesisDoc{
		ChainID:         o.ChainID,
		GenesisTime:     cmttime.Now(),
		InitialHeight:   1,
		ConsensusParams: types.DefaultConsensusParams(),
	}
	gen.ConsensusParams.Version.App = 1 // kvapp's app version
	for i := range members {
		name := fmt.Sprintf("validator%d", i)
		if i >= o.Validators {
			name = fmt.Sprintf("full%d", i-o.Validators)
		}
		m, err := n.newMember(name)
		if err != nil {
			return nil, err
		}
		m.Validator = i < o.Validators
		if m.Validator {
			pub, err := m.PrivVal.GetPubKey()
			if err != nil {
				return nil, err
			}
			gen.Validators = append(gen.Validators, types.GenesisValidator{
				Address: pub.Address(), PubKey: pub, Power: 10, Name: name,
			})
		}
		members[i] = m
	}
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, err
	}
	n.Genesis = gen

	for _, m := range members {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := n.startMember(m, o.Stock, nil); err != nil {
			return nil, err
		}
		n.mtx.Lock()
		n.Nodes = append(n.Nodes, m)
		n.mtx.Unlock()
	}
	return n, nil
}

// newMember makes a member's home, keys and config (ports not yet set).
func (n *Network) newMember(name string) (*Member, error) {
	home := filepath.Join(n.dir, name)
	for _, d := range []string{"config", "data"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			return nil, err
		}
	}
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	cfg.Moniker = name
	cfg.DBBackend = string(dbm.MemDBBackend)
	cfg.TxIndex.Indexer = "null"
	cfg.Instrumentation.Prometheus = false

	cfg.P2P.AllowDuplicateIP = true
	cfg.P2P.AddrBookStrict = false
	cfg.P2P.PexReactor = false
	cfg.P2P.PersistentPeersMaxDialPeriod = 0
	if n.opts.Rate > 0 {
		cfg.P2P.SendRate, cfg.P2P.RecvRate = n.opts.Rate, n.opts.Rate
	}
	cfg.RPC.GRPCListenAddress = ""
	cfg.RPC.PprofListenAddress = ""

	cs := cfg.Consensus
	cs.TimeoutPropose = 2 * time.Second
	cs.TimeoutProposeDelta = 200 * time.Millisecond
	cs.TimeoutPrevote = 300 * time.Millisecond
	cs.TimeoutPrevoteDelta = 100 * time.Millisecond
	cs.TimeoutPrecommit = 300 * time.Millisecond
	cs.TimeoutPrecommitDelta = 100 * time.Millisecond
	cs.TimeoutCommit = n.opts.TimeoutCommit
	cs.PeerGossipSleepDuration = 20 * time.Millisecond
	cs.PeerQueryMaj23SleepDuration = 100 * time.Millisecond

	key := &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
	pv := privval.NewFilePV(ed25519.GenPrivKey(), cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
	pv.Save()
	return &Member{Name: name, Home: home, Config: cfg, NodeKey: key, PrivVal: pv}, nil
}

// memDBProvider gives every database of a node its own MemDB.
func memDBProvider(*cmtcfg.DBContext) (dbm.DB, error) { return dbm.NewMemDB(), nil }

// GenesisProvider returns the network's genesis doc.
func (n *Network) GenesisProvider() cmtnode.GenesisDocProvider {
	return func() (*types.GenesisDoc, error) { return n.Genesis, nil }
}

// PersistentPeers lists the P2P addresses of the network's started nodes
// (comma-separated, as in config.toml).
func (n *Network) PersistentPeers() string {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	addrs := make([]string, 0, len(n.Nodes))
	for _, m := range n.Nodes {
		addrs = append(addrs, m.P2PAddress())
	}
	return strings.Join(addrs, ",")
}

// RPCServers lists the RPC addresses of the network's nodes (with RPC).
func (n *Network) RPCServers() []string {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	var out []string
	for _, m := range n.Nodes {
		if a := m.RPCAddress(); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// maxPortAttempts bounds how often a node is rebuilt because a port picked
// for it was taken before it could listen.
const maxPortAttempts = 5

// startMember picks ports, builds and starts m's node. join, if set, makes
// the node ours with that state sync config (Enable may be set).
func (n *Network) startMember(m *Member, stock bool, join *JoinOptions) error {
	var err error
	for attempt := 0; attempt < maxPortAttempts; attempt++ {
		if err = n.pickPorts(m); err != nil {
			return err
		}
		if err = n.buildAndStart(m, stock, join); err == nil || !isAddrInUse(err) {
			return err
		}
		n.opts.Logger.Info("Port taken, rebuilding node", "node", m.Name, "err", err)
	}
	return err
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

func (n *Network) pickPorts(m *Member) error {
	p2pPort, err := freePort()
	if err != nil {
		return err
	}
	m.Config.P2P.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", p2pPort)
	m.Config.P2P.ExternalAddress = ""
	m.Config.RPC.ListenAddress = ""
	if n.opts.RPC {
		rpcPort, err := freePort()
		if err != nil {
			return err
		}
		m.Config.RPC.ListenAddress = fmt.Sprintf("tcp://127.0.0.1:%d", rpcPort)
	}
	// Dial every node started so far (they are listening).
	m.Config.P2P.PersistentPeers = n.PersistentPeers()
	return nil
}

var (
	portsMtx sync.Mutex
	given    = map[int]bool{}
)

// freePort returns a loopback port nobody listens on, never the same one
// twice in this process (the kernel may hand a just-closed port out again).
func freePort() (int, error) {
	portsMtx.Lock()
	defer portsMtx.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !given[port] {
			given[port] = true
			return port, nil
		}
	}
	return 0, errors.New("localnet: no free port found")
}

func (n *Network) buildAndStart(m *Member, stock bool, join *JoinOptions) error {
	logger := n.opts.Logger.With("node", m.Name)
	// A fresh app for every attempt (a failed attempt may have run
	// InitChain on the last one).
	appOpts := n.opts.App
	if join != nil {
		appOpts = join.App
	}
	app := kvapp.New(appOpts)
	m.App = app
	cc := proxy.NewLocalClientCreator(app)
	if stock {
		cn, err := cmtnode.NewNode(m.Config, m.PrivVal, m.NodeKey, cc, n.GenesisProvider(), memDBProvider,
			cmtnode.DefaultMetricsProvider(m.Config.Instrumentation), logger)
		if err != nil {
			return err
		}
		if err := cn.Start(); err != nil {
			// Start failed: OnStop never runs.
			ssnode.StopUnstarted(cn)
			_ = cn.ProxyApp().Stop()
			return err
		}
		m.stock = cn
		return nil
	}
	ss := statesync.DefaultConfig()
	if n.opts.ServeConfig != nil {
		ss = *n.opts.ServeConfig
	}
	ss.Enable = false
	var sp statesync.StateProvider
	if join != nil {
		ss = join.StateSync
		sp = join.StateProvider
	}
	nd, err := ssnode.New(ssnode.Options{
		Config: m.Config, StateSync: &ss,
		PrivValidator: m.PrivVal, NodeKey: m.NodeKey, ClientCreator: cc,
		Genesis: n.GenesisProvider(), DBProvider: memDBProvider, Logger: logger,
		StateProvider: sp,
	})
	if err != nil {
		return err
	}
	if err := nd.Start(); err != nil {
		_ = nd.Stop()
		return err
	}
	m.ours = nd
	return nil
}

// WaitHeight waits until every validator has committed height h.
func (n *Network) WaitHeight(ctx context.Context, h int64) error {
	return WaitFor(ctx, func() bool {
		n.mtx.Lock()
		defer n.mtx.Unlock()
		for _, m := range n.Nodes {
			if m.Validator && m.Height() < h {
				return false
			}
		}
		return true
	}, fmt.Sprintf("the validators to reach height %d", h))
}

// Height is the lowest block height among the validators.
func (n *Network) Height() int64 {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	var low int64 = -1
	for _, m := range n.Nodes {
		if h := m.Height(); m.Validator && (low < 0 || h < low) {
			low = h
		}
	}
	return low
}

// pollInterval is how often WaitFor checks its condition (the stores offer
// no change notification).
const pollInterval = 20 * time.Millisecond

// WaitFor polls cond until it holds or ctx ends; the error names what.
func WaitFor(ctx context.Context, cond func() bool, what string) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// TrustRoot returns the height and header hash of a block a validator has
// committed, for a joining node's trust_height and trust_hash (an operator
// takes it from a source they trust).
func (n *Network) TrustRoot(h int64) (int64, string, error) {
	n.mtx.Lock()
	defer n.mtx.Unlock()
	for _, m := range n.Nodes {
		if meta := m.BlockStore().LoadBlockMeta(h); meta != nil {
			return h, meta.BlockID.Hash.String(), nil
		}
	}
	return 0, "", fmt.Errorf("localnet: no node has block %d", h)
}

// JoinOptions describe a node joining the network.
type JoinOptions struct {
	Name string
	// App is the joining node's app; default (no ChunkSize and no
	// SnapshotInterval set): an empty kvapp with the network's chunk size
	// and snapshot interval.
	App kvapp.Options
	// Stock joins with CometBFT's built-in state sync (configured from
	// StateSync: Enable, RPCServers, trust root, discovery time, …)
	// instead of ours.
	Stock bool
	// StateSync is our state sync config (Enable for a state-syncing node).
	StateSync statesync.Config
	// StateProvider optionally replaces the one built from StateSync.
	StateProvider statesync.StateProvider
	// Configure, if set, edits the node's CometBFT config before it starts.
	Configure func(*cmtcfg.Config)
}

// Join starts a node that dials every node of the network. With
// StateSync.Enable it state syncs (our reactor, or CometBFT's with Stock).
// Stop stops it with the network.
func (n *Network) Join(o JoinOptions) (*Member, error) {
	if o.Name == "" {
		o.Name = "joiner"
	}
	if o.App.ChunkSize == 0 && o.App.SnapshotInterval == 0 {
		o.App = kvapp.Options{
			ChunkSize: n.opts.App.ChunkSize, SnapshotInterval: n.opts.App.SnapshotInterval,
			SnapshotKeep: n.opts.App.SnapshotKeep,
		}
	}
	m, err := n.newMember(o.Name)
	if err != nil {
		return nil, err
	}
	configure := func(cfg *cmtcfg.Config) {
		if o.Stock {
			ss := cfg.StateSync
			ss.Enable = o.StateSync.Enable
			ss.RPCServers = o.StateSync.RPCServers
			ss.TrustHeight = o.StateSync.TrustHeight
			ss.TrustHash = o.StateSync.TrustHash
			ss.TrustPeriod = o.StateSync.TrustPeriod
			ss.DiscoveryTime = o.StateSync.DiscoveryTime
			ss.ChunkRequestTimeout = o.StateSync.ChunkRequestTimeout
			ss.TempDir = o.StateSync.TempDir
		}
		if o.Configure != nil {
			o.Configure(cfg)
		}
	}
	err = n.startJoiner(m, o, configure)
	if err != nil {
		return nil, err
	}
	n.mtx.Lock()
	n.joined = append(n.joined, m)
	n.mtx.Unlock()
	return m, nil
}

func (n *Network) startJoiner(m *Member, o JoinOptions, configure func(*cmtcfg.Config)) error {
	var err error
	for attempt := 0; attempt < maxPortAttempts; attempt++ {
		if err = n.pickPorts(m); err != nil {
			return err
		}
		configure(m.Config)
		if err = n.buildAndStart(m, o.Stock, &o); err == nil || !isAddrInUse(err) {
			return err
		}
	}
	return err
}

// Stop stops every node (joined ones first) and removes the temporary
// directory. Idempotent.
func (n *Network) Stop() error {
	n.mtx.Lock()
	if n.stopped {
		n.mtx.Unlock()
		return nil
	}
	n.stopped = true
	members := append(append([]*Member(nil), n.joined...), n.Nodes...)
	n.mtx.Unlock()
	var errs []error
	// Stop in parallel: each node's Stop waits for its peers' connections
	// to wind down.
	var wg sync.WaitGroup
	var emtx sync.Mutex
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Stop(); err != nil {
				emtx.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
				emtx.Unlock()
			}
		}()
	}
	wg.Wait()
	if n.ownDir {
		if err := os.RemoveAll(n.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FreeAddress returns a listen address (tcp://127.0.0.1:port) on a free
// loopback port, for a node configured outside this package.
func FreeAddress() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("tcp://127.0.0.1:%d", port), nil
}
