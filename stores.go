package statesync

import (
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
)

// StateStore is what the Reactor needs of the node's state store: it reads
// validator sets and consensus params to serve peers' light-block and
// params requests, and Sync bootstraps it. CometBFT's sm.Store (from
// sm.NewStore) satisfies it; pass the node's own instance, never a second
// one over the same database.
//
// Methods may be called concurrently from the serving workers and must be
// safe for that. Returned values are owned by the caller.
type StateStore interface {
	// Bootstrap saves state, restored and verified by Sync, as the node's
	// current state, with the validator sets at LastBlockHeight,
	// LastBlockHeight+1 and +2 and the consensus params. Called once, after
	// the application was restored, as the last of Sync's store writes
	// (see Reactor.Sync): a node whose state store is bootstrapped counts
	// as synced on its next boot. An error fails Sync.
	Bootstrap(state sm.State) error
	// SetOfflineStateSyncHeight records height as the height the stores
	// were state-synced to while the block store is still empty, which is
	// what lets CometBFT's block sync reactor start from height+1 instead of
	// panicking on a state/store height mismatch. Sync calls it before
	// Bootstrap. CometBFT's node.NewNode resets it to 0 at every boot, so a
	// node that boots again before storing block height+1 must set it
	// again before NewNode (package node does).
	SetOfflineStateSyncHeight(height int64) error
	// LoadValidators returns the validator set (with the proposer
	// priorities) in force at height, or an error if the store does not
	// have it (pruned, or above the latest height). It must not block on
	// anything but storage.
	LoadValidators(height int64) (*types.ValidatorSet, error)
	// LoadConsensusParams returns the consensus params in force at height,
	// or an error if the store does not have them.
	LoadConsensusParams(height int64) (types.ConsensusParams, error)
}

// BlockStore is what the Reactor needs of the node's block store: it reads
// headers and commits to serve peers' light-block requests, and Sync saves
// the snapshot height's commit. CometBFT's *store.BlockStore satisfies it;
// pass the node's own instance (it caches its base and height, so a second
// instance over the same database goes stale).
//
// Load methods return nil when the store lacks the height and must be safe
// for concurrent use. Returned values are owned by the caller.
type BlockStore interface {
	// Base is the lowest height stored (0 if empty).
	Base() int64
	// Height is the highest height stored (0 if empty).
	Height() int64
	// LoadBlockMeta returns the block ID and header at height.
	LoadBlockMeta(height int64) *types.BlockMeta
	// LoadBlockCommit returns the canonical commit of height, which is
	// stored with the block at height+1 (nil at the latest height).
	LoadBlockCommit(height int64) *types.Commit
	// LoadSeenCommit returns the commit this node saw for height (stored
	// for the latest height, and by Sync for the snapshot height).
	LoadSeenCommit(height int64) *types.Commit
	// SaveSeenCommit stores commit as the seen commit of height. Sync calls
	// it once, for the snapshot height, as the first of its store writes.
	SaveSeenCommit(height int64, commit *types.Commit) error
}

// CometBFT's stores satisfy the interfaces (sm.NewStore returns an sm.Store).
var (
	_ StateStore = sm.Store(nil)
	_ BlockStore = (*store.BlockStore)(nil)
)
