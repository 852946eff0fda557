package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/types"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/node"
)

// Example boots a CometBFT node whose state sync is this library's and
// lets it join a running chain: it restores the app from a snapshot
// verified with light blocks from its peers (no RPC server), backfills the
// headers below it, and hands over to block sync. The chain it joins is
// two validators built the same way, with state sync off; every node runs
// snapApp, a tiny app with snapshots (below). Only public APIs are used.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, _ := os.MkdirTemp("", "example-node-")
	defer os.RemoveAll(dir)

	// The chain: two validators on loopback, snapshots every 5 blocks.
	var (
		cfgs     []*cmtcfg.Config
		pvs      []*privval.FilePV
		nodeKeys []*p2p.NodeKey
		peers    []string // id@host:port
	)
	gen := &types.GenesisDoc{ChainID: "example", GenesisTime: time.Now(), ConsensusParams: types.DefaultConsensusParams()}
	for i := range 2 {
		cfg := exampleConfig(filepath.Join(dir, fmt.Sprint("validator", i)))
		pv := privval.GenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
		gen.Validators = append(gen.Validators, types.GenesisValidator{Address: pv.GetAddress(), PubKey: pv.Key.PubKey, Power: 10})
		nodeKey := &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()}
		peers = append(peers, p2p.IDAddressString(nodeKey.ID(), cfg.P2P.ListenAddress[len("tcp://"):]))
		cfgs, pvs, nodeKeys = append(cfgs, cfg), append(pvs, pv), append(nodeKeys, nodeKey)
	}
	genesis := func() (*types.GenesisDoc, error) { return gen, nil }
	var validators []*node.Node
	for i, cfg := range cfgs {
		cfg.P2P.PersistentPeers = peers[1-i]
		v, err := node.New(node.Options{ // state sync off: it serves snapshots and light blocks
			Config: cfg, PrivValidator: pvs[i], NodeKey: nodeKeys[i],
			ClientCreator: proxy.NewLocalClientCreator(newSnapApp(5)), Genesis: genesis,
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		if err := v.Start(); err != nil {
			fmt.Println(err)
			return
		}
		defer v.Stop()
		validators = append(validators, v)
	}
	if !waitHeight(ctx, validators[0], 7) { // the snapshot at 5 is usable once 7 is committed
		fmt.Println("the chain did not reach height 7")
		return
	}

	// The joining node's CometBFT config, as read from its config.toml, and
	// its [statesync] section: verify over P2P, from a trusted header (an
	// operator takes its hash from a source they trust).
	cfg := exampleConfig(filepath.Join(dir, "fresh"))
	cfg.P2P.PersistentPeers = peers[0] + "," + peers[1]
	ss := statesync.DefaultConfig()
	ss.Enable, ss.UseP2P = true, true
	ss.TrustHeight = 1
	ss.TrustHash = validators[0].CometBFT().BlockStore().LoadBlockMeta(1).BlockID.Hash.String()
	ss.DiscoveryTime = time.Second

	n, err := node.New(node.Options{
		Config:        cfg,
		StateSync:     &ss,
		PrivValidator: privval.GenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile()),
		NodeKey:       &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()},
		ClientCreator: proxy.NewLocalClientCreator(newSnapApp(5)),
		Genesis:       genesis,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := n.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer n.Stop()

	select {
	case <-n.Synced():
	case <-n.Done(): // a failed state sync stops the node
		fmt.Println("state sync failed:", n.Err())
		return
	case <-ctx.Done():
		fmt.Println(ctx.Err())
		return
	}
	res := n.SyncResult()
	fmt.Println("restored from a snapshot:", res.State.LastBlockHeight%5 == 0)
	// The node hands over to block sync at once; backfill runs alongside.
	bf, err := n.WaitBackfill(ctx)
	if err != nil || bf == nil {
		fmt.Println("no backfill:", err)
		return
	}
	fmt.Println("backfilled down to height", bf.To)
	// Output:
	// restored from a snapshot: true
	// backfilled down to height 1
}

// exampleConfig is a CometBFT config for a node on loopback in home: in
// memory, no RPC server, a free P2P port, blocks every ~200 ms.
func exampleConfig(home string) *cmtcfg.Config {
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	cmtcfg.EnsureRoot(home)
	cfg.DBBackend = "memdb"
	cfg.TxIndex.Indexer = "null"
	cfg.RPC.ListenAddress = ""
	cfg.P2P.ListenAddress = "tcp://" + freeAddress()
	cfg.P2P.AllowDuplicateIP = true // every peer is on 127.0.0.1
	cfg.P2P.AddrBookStrict = false
	cfg.P2P.PexReactor = false
	cfg.Consensus.TimeoutCommit = 200 * time.Millisecond
	return cfg
}

func freeAddress() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHeight polls n's block store until it holds height h or ctx ends.
func waitHeight(ctx context.Context, n *node.Node, h int64) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n.CometBFT().BlockStore().Height() < h {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// snapApp is a tiny ABCI app with snapshots: its state is the bytes of
// the transactions it executed (none here, so it starts from a seed), its
// app hash the state's SHA-256. Every interval blocks it keeps a snapshot
// of the state, served in chunks of 1 KiB; a restore rebuilds the state
// from the chunks and checks it against the snapshot's hash, which is the
// app hash the light client verified.
type snapApp struct {
	abci.BaseApplication
	interval int64

	mtx       sync.Mutex
	height    int64
	state     []byte
	snapshots map[uint64][]byte // height → state
	offered   *abci.Snapshot    // the snapshot being restored
	received  [][]byte
}

const snapChunk = 1 << 10

func newSnapApp(interval int64) *snapApp {
	return &snapApp{interval: interval, state: bytes.Repeat([]byte("seed"), 2000), snapshots: map[uint64][]byte{}}
}

func appHash(state []byte) []byte { h := sha256.Sum256(state); return h[:] }

func (a *snapApp) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseInfo{LastBlockHeight: a.height}
	if a.height > 0 {
		res.LastBlockAppHash = appHash(a.state)
	}
	return res, nil
}

func (a *snapApp) FinalizeBlock(_ context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseFinalizeBlock{}
	for _, tx := range req.Txs {
		a.state = append(a.state, tx...)
		res.TxResults = append(res.TxResults, &abci.ExecTxResult{})
	}
	a.height = req.Height
	res.AppHash = appHash(a.state)
	return res, nil
}

func (a *snapApp) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if a.height%a.interval == 0 {
		a.snapshots[uint64(a.height)] = bytes.Clone(a.state)
		delete(a.snapshots, uint64(a.height-3*a.interval)) // keep three
	}
	return &abci.ResponseCommit{}, nil
}

func (a *snapApp) ListSnapshots(context.Context, *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseListSnapshots{}
	for h, s := range a.snapshots {
		res.Snapshots = append(res.Snapshots, &abci.Snapshot{
			Height: h, Format: 1, Chunks: uint32((len(s) + snapChunk - 1) / snapChunk), Hash: appHash(s),
		})
	}
	return res, nil
}

func (a *snapApp) LoadSnapshotChunk(_ context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	s, ok := a.snapshots[req.Height]
	from := int(req.Chunk) * snapChunk
	if !ok || req.Format != 1 || from >= len(s) {
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	return &abci.ResponseLoadSnapshotChunk{Chunk: s[from:min(from+snapChunk, len(s))]}, nil
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
	a.state, a.height, a.offered, a.received = state, int64(a.offered.Height), nil, nil
	a.snapshots[uint64(a.height)] = bytes.Clone(state)
	return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
}
