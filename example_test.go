package statesync_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/proxy"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"

	"github.com/statesync/statesync"
)

// Example embeds the Reactor in two nodes on CometBFT switches: one serves
// a snapshot, the other restores from it with Sync (the steps of doc.go).
// Only public APIs are used. snapApp (below) is a tiny app with snapshots;
// the chain is a few blocks signed here by one validator, and lightSource
// serves its light blocks in place of a real node's RPC servers (a real
// node sets Config.RPCServers, or Config.UseP2P to fetch them from peers).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A chain whose header 11 commits to the app hash of the state the
	// serving app snapshotted at height 10.
	server := newSnapApp()
	snapshot := server.takeSnapshot(10)
	chain, genesis, err := signedChain("example", 14, map[int64][]byte{11: snapshot.Hash})
	if err != nil {
		panic(err)
	}

	// Steps 1–3 for each node: config, the app's connections and the
	// node's stores, the reactor.
	var stops []func() // run in reverse order at the end
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	newReactor := func(app abci.Application, sp statesync.StateProvider) (*statesync.Reactor, sm.Store) {
		conns := proxy.NewAppConns(proxy.NewLocalClientCreator(app), proxy.NopMetrics())
		if err := conns.Start(); err != nil {
			panic(err)
		}
		stops = append(stops, func() { _ = conns.Stop() })
		stateDB, blockDB := dbm.NewMemDB(), dbm.NewMemDB()
		stateStore := sm.NewStore(stateDB, sm.StoreOptions{})
		cfg := statesync.DefaultConfig()
		cfg.DiscoveryTime = 100 * time.Millisecond
		cfg.TempDir = os.TempDir()
		cfg.Backfill = false // the serving node here keeps no block history to backfill from
		r, err := statesync.NewReactor(cfg, statesync.Deps{
			Snapshots:     conns.Snapshot(),
			Query:         conns.Query(),
			StateStore:    stateStore,
			BlockStore:    store.NewBlockStore(blockDB),
			Backfill:      statesync.NewDBBackfillStore(blockDB, stateDB),
			Genesis:       genesis,
			StateProvider: sp, // nil: built from Config (RPCServers or UseP2P)
		})
		if err != nil {
			panic(err)
		}
		return r, stateStore
	}
	serving, _ := newReactor(server, nil)
	trust := light.TrustOptions{Period: time.Hour, Height: 1, Hash: chain.hash(1)}
	sp, err := statesync.NewLightClientStateProvider(ctx, genesis.ChainID, genesis.Version, genesis.InitialHeight,
		chain, []provider.Provider{chain.witness()}, trust, chain, 5*time.Second, nil)
	if err != nil {
		panic(err)
	}
	fresh, stateStore := newReactor(newSnapApp(), sp)

	// Step 4: add each reactor to its node's switch as "STATESYNC", start
	// the switches and connect them.
	a, b := startSwitch(serving), startSwitch(fresh) // stopping a switch stops its reactors
	stops = append(stops, a.stop, b.stop)
	if err := b.sw.DialPeerWithAddress(a.addr); err != nil {
		panic(err)
	}

	// Step 5: restore. Sync returns the state to hand to block sync.
	state, err := fresh.Sync(ctx)
	if err != nil {
		fmt.Println("sync failed:", err)
		return
	}
	stored, _ := stateStore.Load()
	fmt.Println("restored height", state.LastBlockHeight, "- state store at", stored.LastBlockHeight)
	// Output: restored height 10 - state store at 10
}

// node is a started switch with its transport.
type node struct {
	sw   *p2p.Switch
	tr   *p2p.MultiplexTransport
	addr *p2p.NetAddress
}

func (n node) stop() { _ = n.sw.Stop(); _ = n.tr.Close() }

// startSwitch starts a switch on a free loopback port with r as its
// STATESYNC reactor, its channels in the node info, as a node's own
// switch would have them.
func startSwitch(r *statesync.Reactor) node {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	listen := l.Addr().String()
	_ = l.Close()
	key := p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
	info := p2p.DefaultNodeInfo{
		ProtocolVersion: p2p.NewProtocolVersion(version.P2PProtocol, version.BlockProtocol, 0),
		DefaultNodeID:   key.ID(), ListenAddr: listen, Network: "example", Version: version.TMCoreSemVer,
		Moniker: "node",
	}
	for _, ch := range r.GetChannels() {
		info.Channels = append(info.Channels, ch.ID)
	}
	addr, err := p2p.NewNetAddressString(p2p.IDAddressString(key.ID(), listen))
	if err != nil {
		panic(err)
	}
	cfg := cmtcfg.DefaultP2PConfig()
	cfg.AllowDuplicateIP = true // both on 127.0.0.1
	tr := p2p.NewMultiplexTransport(info, key, p2p.MConnConfig(cfg))
	if err := tr.Listen(*addr); err != nil {
		panic(err)
	}
	sw := p2p.NewSwitch(cfg, tr)
	sw.SetNodeKey(&key)
	sw.SetNodeInfo(info)
	sw.AddReactor("STATESYNC", r)
	if err := sw.Start(); err != nil {
		panic(err)
	}
	return node{sw: sw, tr: tr, addr: addr}
}

// lightSource serves the light blocks of a chain signed by one validator
// (provider.Provider) and its consensus params (statesync.ParamsSource).
type lightSource struct {
	chainID string
	name    string
	params  types.ConsensusParams
	blocks  map[int64]*cmtproto.LightBlock // a fresh copy is served each time
	top     int64
}

// signedChain makes blocks 1..top of chainID, signed by one new
// validator, whose header at h carries appHashes[h] (or none), and the
// genesis state a node of the chain starts from.
func signedChain(chainID string, top int64, appHashes map[int64][]byte) (*lightSource, sm.State, error) {
	key := ed25519.GenPrivKey()
	params := *types.DefaultConsensusParams()
	genDoc := &types.GenesisDoc{ChainID: chainID, GenesisTime: time.Now().Add(-time.Minute),
		ConsensusParams: &params, Validators: []types.GenesisValidator{{PubKey: key.PubKey(), Power: 10}}}
	if err := genDoc.ValidateAndComplete(); err != nil {
		return nil, sm.State{}, err
	}
	genesis, err := sm.MakeGenesisState(genDoc)
	if err != nil {
		return nil, sm.State{}, err
	}
	vals := genesis.Validators
	src := &lightSource{chainID: chainID, name: "primary", params: params, blocks: map[int64]*cmtproto.LightBlock{}, top: top}
	lastCommit, lastID := &types.Commit{}, types.BlockID{}
	for h := int64(1); h <= top; h++ {
		at := genDoc.GenesisTime.Add(time.Duration(h) * time.Second)
		block := types.MakeBlock(h, nil, lastCommit, nil)
		block.Header.Populate(cmtversion.Consensus{Block: version.BlockProtocol, App: params.Version.App},
			chainID, at, lastID, vals.Hash(), vals.Hash(), params.Hash(), appHashes[h], nil, vals.Validators[0].Address)
		parts, err := block.MakePartSet(types.BlockPartSizeBytes)
		if err != nil {
			return nil, sm.State{}, err
		}
		id := types.BlockID{Hash: block.Hash(), PartSetHeader: parts.Header()}
		vote := &types.Vote{Type: cmtproto.PrecommitType, Height: h, BlockID: id, Timestamp: at.Add(time.Second),
			ValidatorAddress: vals.Validators[0].Address}
		sig, err := key.Sign(types.VoteSignBytes(chainID, vote.ToProto()))
		if err != nil {
			return nil, sm.State{}, err
		}
		commit := &types.Commit{Height: h, BlockID: id, Signatures: []types.CommitSig{{
			BlockIDFlag: types.BlockIDFlagCommit, ValidatorAddress: vote.ValidatorAddress, Timestamp: vote.Timestamp,
			Signature: sig,
		}}}
		lb := &types.LightBlock{SignedHeader: &types.SignedHeader{Header: &block.Header, Commit: commit}, ValidatorSet: vals}
		if src.blocks[h], err = lb.ToProto(); err != nil {
			return nil, sm.State{}, err
		}
		lastCommit, lastID = commit, id
	}
	return src, genesis, nil
}

// witness is a second source of the same chain (the light client needs a
// witness; a real node names other RPC servers or peers).
func (s *lightSource) witness() *lightSource { w := *s; w.name = "witness"; return &w }

func (s *lightSource) hash(h int64) []byte {
	lb, _ := types.LightBlockFromProto(s.blocks[h])
	return lb.Hash()
}

func (s *lightSource) String() string  { return s.name }
func (s *lightSource) ChainID() string { return s.chainID }

func (s *lightSource) LightBlock(_ context.Context, h int64) (*types.LightBlock, error) {
	switch {
	case h == 0:
		h = s.top
	case h > s.top:
		return nil, provider.ErrHeightTooHigh
	}
	pb, ok := s.blocks[h]
	if !ok {
		return nil, provider.ErrLightBlockNotFound
	}
	return types.LightBlockFromProto(pb)
}

func (s *lightSource) ReportEvidence(context.Context, types.Evidence) error { return nil }

func (s *lightSource) ConsensusParams(context.Context, int64) (types.ConsensusParams, error) {
	return s.params, nil
}

// snapApp is a tiny ABCI app with snapshots: its state is a byte string,
// its app hash the state's SHA-256. A snapshot is the state at a height,
// served in chunks of 1 KiB; a restore rebuilds the state from the chunks
// and checks it against the snapshot's hash, which is the app hash the
// light client verified. (A real app also executes blocks.)
type snapApp struct {
	abci.BaseApplication

	mtx      sync.Mutex
	height   int64
	state    []byte
	snapshot []byte // the state at height, when a snapshot was taken
	offered  *abci.Snapshot
	received [][]byte
}

const snapChunk = 1 << 10

func newSnapApp() *snapApp { return &snapApp{} }

func appHash(state []byte) []byte { h := sha256.Sum256(state); return h[:] }

// takeSnapshot gives the app a state at height and snapshots it.
func (a *snapApp) takeSnapshot(height int64) *abci.Snapshot {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.height, a.state = height, bytes.Repeat([]byte("example state "), 1000)
	a.snapshot = bytes.Clone(a.state)
	return a.snapshotInfo()
}

func (a *snapApp) snapshotInfo() *abci.Snapshot {
	return &abci.Snapshot{Height: uint64(a.height), Format: 1,
		Chunks: uint32((len(a.snapshot) + snapChunk - 1) / snapChunk), Hash: appHash(a.snapshot)}
}

func (a *snapApp) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseInfo{LastBlockHeight: a.height}
	if a.height > 0 {
		res.LastBlockAppHash = appHash(a.state)
	}
	return res, nil
}

func (a *snapApp) ListSnapshots(context.Context, *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if a.snapshot == nil {
		return &abci.ResponseListSnapshots{}, nil
	}
	return &abci.ResponseListSnapshots{Snapshots: []*abci.Snapshot{a.snapshotInfo()}}, nil
}

func (a *snapApp) LoadSnapshotChunk(_ context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	from := int(req.Chunk) * snapChunk
	if a.snapshot == nil || req.Height != uint64(a.height) || req.Format != 1 || from >= len(a.snapshot) {
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	return &abci.ResponseLoadSnapshotChunk{Chunk: a.snapshot[from:min(from+snapChunk, len(a.snapshot))]}, nil
}

func (a *snapApp) OfferSnapshot(_ context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	switch {
	case req.Snapshot.Format != 1:
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT_FORMAT}, nil
	case !bytes.Equal(req.Snapshot.Hash, req.AppHash): // the verified app hash
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT}, nil
	}
	a.offered, a.received = req.Snapshot, nil
	return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_ACCEPT}, nil
}

func (a *snapApp) ApplySnapshotChunk(_ context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if a.offered == nil || int(req.Index) != len(a.received) {
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ABORT}, nil
	}
	a.received = append(a.received, req.Chunk)
	if len(a.received) < int(a.offered.Chunks) {
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
	}
	state := bytes.Join(a.received, nil)
	if !bytes.Equal(appHash(state), a.offered.Hash) { // a peer sent a wrong chunk
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT}, nil
	}
	a.height, a.state, a.snapshot = int64(a.offered.Height), state, bytes.Clone(state)
	a.offered, a.received = nil, nil
	return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
}
