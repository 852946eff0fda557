// Package statesync restores a CometBFT node from an application snapshot
// served by its peers, instead of replaying every block, and serves
// snapshots, chunks, light blocks and consensus params to other nodes.
//
// It is a drop-in replacement for CometBFT v0.40's built-in state sync
// reactor: channels 0x60 (snapshots) and 0x61 (chunks) interoperate with
// unmodified CometBFT nodes, and all four channels, including 0x62 (light
// blocks) and 0x63 (consensus params), with tendermint v0.35.
//
// # Embedding, step by step
//
//  1. Build a Config: DefaultConfig(), or FromCometBFT(nodeConfig.StateSync)
//     to start from a node's [statesync] section. Set RPCServers (two
//     distinct servers) and the trust root (TrustHeight, TrustHash), or set
//     UseP2P to verify light blocks fetched from peers instead of RPC.
//  2. Collect the Deps: the app's snapshot and query connections
//     (proxy.AppConns.Snapshot(), .Query()), the node's state store and
//     block store (CometBFT's sm.Store and *store.BlockStore satisfy
//     StateStore and BlockStore), a BackfillStore on the node's own DB
//     handles (NewDBBackfillStore) and the genesis state.
//  3. NewReactor(cfg, deps) and add it to the switch under the name
//     "STATESYNC" (replacing CometBFT's reactor; the node package of this
//     module does that for a CometBFT node), or, for another p2p layer,
//     call AttachRouter and drive PeerUp, PeerDown and Deliver yourself.
//  4. Start the switch (which starts the Reactor). From then on the node
//     serves snapshots, chunks, light blocks and params to its peers.
//  5. If the node has no state yet, call Sync(ctx). It discovers snapshots,
//     verifies the chosen height with a light client, restores the app,
//     writes the stores in a crash-safe order (seen commit, offline
//     state-sync height, Bootstrap last) and returns the state; with
//     Config.Backfill it starts the backfill of historical headers in the
//     background (WaitBackfill). Subscribe to follow its Progress. After a
//     restart of a synced node, ResumeBackfill continues an unfinished
//     backfill.
//  6. Hand the returned state to block sync (and then consensus). If Sync
//     fails, stop the node with the error: it names its cause and wraps one
//     of the sentinel errors (ErrNoSnapshots, ErrAllSnapshotsRejected,
//     ErrAbort, ...).
//
// # Failure model
//
// Peers may lie, stall, disconnect or flood. Every inbound message is
// validated before anything is allocated for it, and an invalid message gets
// its sender disconnected. Every response is matched to a request from the
// same peer; unsolicited, late and duplicate responses are dropped and
// counted. Chunk requests time out when a peer stops delivering and are
// re-requested from others; fetched chunks are spooled to disk and kept
// when a snapshot is retried. Snapshots whose height cannot be verified
// yet (the chain tip) or whose verification failed transiently are tried
// again later; only a snapshot that failed for cause is rejected.
//
// # Concurrency
//
// The algorithmic cores (snapshot pool, fetch scheduler, chunk queue, block
// queue, serving queue) are plain structs without goroutines, driven by
// thin goroutines that the Reactor owns and stops: Stop cancels a running
// Sync, releases every pending request and waits for every goroutine.
package statesync
