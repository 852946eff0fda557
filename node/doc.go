// Package node builds a CometBFT v0.40 node whose state sync is this
// module's Reactor: it serves snapshots, chunks, light blocks and consensus
// params on channels 0x60-0x63 in every node, and, on a node without state,
// restores from a snapshot at boot and hands over to block sync and
// consensus at once, backfilling historical headers in the background.
//
// # Usage
//
//	n, err := node.New(node.Options{
//		Config:        cmtConfig,            // *cmtcfg.Config, as for node.NewNode
//		StateSync:     &ssConfig,            // *statesync.Config (FromCometBFT + our keys)
//		PrivValidator: pv, NodeKey: nodeKey,
//		ClientCreator: proxy.NewLocalClientCreator(app),
//		Genesis:       cmtnode.DefaultGenesisDocProviderFunc(cmtConfig),
//		Logger:        logger,
//	})
//	if err := n.Start(); err != nil { ... }
//	<-n.Done()        // the node stopped: by Stop, or because state sync failed
//	err = n.Err()     // why it stopped (nil after Stop)
//
// Synced is closed once the node has restored (or at once when it does not
// state sync); SyncResult tells how. Reactor().Subscribe() streams progress.
//
// # How the built-in reactor is replaced (the decision)
//
// Three ways were considered:
//
//	(a) build the node with node.NewNode and swap the reactor registered as
//	    "STATESYNC" for ours with an Option, keep CometBFT's own boot path
//	    (state sync enabled: no handshake, block sync and consensus parked),
//	    run our Sync after Start and hand over ourselves;
//	(b) run our Sync on the node's switch before the node starts: impossible,
//	    the switch is created and started inside node.NewNode / Node.Start;
//	(c) restore with a temporary switch before building the node, bootstrap
//	    the stores and boot the node with SetOfflineStateSyncHeight: needs
//	    two switches on one node key and listen address in sequence (peers
//	    see the node leave and come back, persistent peers are re-dialled),
//	    and still needs (a)'s replacement for serving.
//
// This package does (a). It is the path CometBFT itself takes after its own
// state sync, so block sync, consensus and the mempool are switched exactly
// as upstream does it, on one switch and one set of connections. The traps
// of (a), and how each is handled:
//
//   - CustomReactors swaps the reactor on the switch, but the node keeps a
//     pointer to the old one and, with state sync enabled, calls its Sync
//     from Start. That Sync first broadcasts a snapshot request through the
//     old reactor's switch, which CustomReactors has reset to nil (a nil
//     dereference, in a goroutine: the process dies). Our Option gives the
//     old reactor a "parked" switch whose broadcasts go nowhere, sets
//     [statesync] discovery_time = 0 so that its Sync returns at once with
//     "no suitable snapshots found" without touching any store, and silences
//     its logger so that this expected failure is not logged as an error.
//   - With state sync enabled, Start builds a light-client state provider
//     from rpc_servers and fails when there are none (use_p2p): we pass a
//     placeholder provider with node.StateProvider; it is never called.
//   - Our Reactor needs the app connections and the stores, which only exist
//     inside NewNode: it is built inside the same Option, from the node's
//     ProxyApp and BlockStore, and a state store over the node's own state
//     DB. There is no StateStore accessor, so a DBProvider wrapper captures
//     the "state" and "blockstore" DB handles as NewNode opens them; the
//     backfill store writes through those same handles (never a second
//     BlockStore instance, which would cache base and height).
//   - Whether to sync is decided as CometBFT decides it: statesync.enable,
//     no state yet (last block height 0), and not the only genesis
//     validator. Our statesync.Config.Enable drives the node config's
//     [statesync] enable (on a copy of the config; the caller's is left
//     alone), so the node parks block sync and consensus exactly when we
//     sync.
//   - On failure the stock node logs and stays parked forever. Ours stops the
//     node and reports the error through Done/Err (and Wait).
//   - The libp2p switch (p2p.libp2p.enabled) ignores CustomReactors (its
//     AddReactor/RemoveReactor are no-ops): New refuses that configuration
//     rather than silently running CometBFT's reactor.
//   - Node.Stop does not stop the proxy app connections (whose watcher
//     goroutine would then leak); our Stop does.
//   - NewNode resets the offline state-sync height at every boot, and block
//     sync panics on a state at S over an empty block store without it: New
//     sets it again before NewNode while block S+1 is not stored, and
//     clears it when a sync stopped before Bootstrap (boot.go).
//   - No usable snapshot with on_no_snapshot = "blocksync": the node runs
//     the ABCI handshake NewNode skipped and enables block sync from the
//     initial height (fallback.go).
//   - A node state-synced before a restart continues its unfinished
//     backfill (Reactor.ResumeBackfill).
//
// With state sync disabled the node boots as CometBFT would (handshake,
// block sync from its store height) and our Reactor still serves all four
// channels; CustomReactors adds 0x62 and 0x63 to the channels the node
// advertises.
package node
