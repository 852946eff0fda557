package statesync

import (
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/cometbft/cometbft/types"
)

// StateStore is what the Reactor needs of the node's state store.
// CometBFT's sm.Store satisfies it.
type StateStore interface {
	// Bootstrap saves a state restored by Sync as the node's current state,
	// with its validator sets and consensus params. Called once, after the
	// app was restored and verified.
	Bootstrap(state sm.State) error
	// LoadValidators returns the validator set at height, or an error if
	// the store does not have it. Used to serve light blocks.
	LoadValidators(height int64) (*types.ValidatorSet, error)
	// LoadConsensusParams returns the consensus params at height, or an
	// error if the store does not have them. Used to serve params.
	LoadConsensusParams(height int64) (types.ConsensusParams, error)
}

// BlockStore is what the Reactor needs of the node's block store.
// CometBFT's *store.BlockStore satisfies it. Load methods return nil when
// the store lacks the height; they must be safe for concurrent use.
type BlockStore interface {
	// Base and Height are the lowest and highest stored heights.
	Base() int64
	Height() int64
	// LoadBlockMeta returns the header and block ID at height.
	LoadBlockMeta(height int64) *types.BlockMeta
	// LoadBlockCommit returns the commit of height (stored with height+1).
	LoadBlockCommit(height int64) *types.Commit
	// LoadSeenCommit returns the commit this node saw for height.
	LoadSeenCommit(height int64) *types.Commit
	// SaveSeenCommit stores the commit of the snapshot height after Sync.
	SaveSeenCommit(height int64, commit *types.Commit) error
}

var (
	_ StateStore = sm.Store(nil)
	_ BlockStore = (*store.BlockStore)(nil)
)
