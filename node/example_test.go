package node_test

import (
	"context"
	"fmt"
	"os"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/proxy"
	"github.com/cometbft/cometbft/types"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/localnet"
	"github.com/statesync/statesync/node"
)

// Example boots a CometBFT node whose state sync is this library's and
// lets it join a running chain: it restores the app from a snapshot
// verified with light blocks from its peers (no RPC server), backfills the
// headers below it, and hands over to block sync.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A running chain to join (in-process, loopback TCP): two validators
	// whose app takes a snapshot every 5 blocks.
	net, err := localnet.Start(ctx, localnet.Options{
		Validators: 2, App: kvapp.Options{Keys: 100, ValueSize: 100, SnapshotInterval: 5},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer net.Stop()
	if err := net.WaitHeight(ctx, 7); err != nil {
		fmt.Println(err)
		return
	}

	// The node's CometBFT config, as read from its config.toml.
	home, _ := os.MkdirTemp("", "example-node-")
	defer os.RemoveAll(home)
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	cfg.DBBackend = "memdb"
	cfg.TxIndex.Indexer = "null"
	cfg.RPC.ListenAddress = ""
	cfg.P2P.ListenAddress, _ = localnet.FreeAddress()
	cfg.P2P.PersistentPeers = net.PersistentPeers()
	cfg.P2P.AllowDuplicateIP = true // every peer is on 127.0.0.1

	// Its [statesync] section: verify over P2P, from a trusted header
	// (an operator takes its hash from a source they trust).
	ss := statesync.DefaultConfig()
	ss.Enable, ss.UseP2P = true, true
	ss.TrustHeight, ss.TrustHash, _ = net.TrustRoot(1)
	ss.DiscoveryTime = time.Second

	n, err := node.New(node.Options{
		Config:        cfg,
		StateSync:     &ss,
		PrivValidator: types.NewMockPV(),
		NodeKey:       &p2p.NodeKey{PrivKey: ed25519.GenPrivKey()},
		ClientCreator: proxy.NewLocalClientCreator(kvapp.New(kvapp.Options{})),
		Genesis:       net.GenesisProvider(),
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
