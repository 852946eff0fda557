package statesync

import (
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"
)

// loadLightBlock builds the light block at height from the block store
// (header, commit) and the state store (validators). It returns nil, nil
// when the node lacks any part of it, or has no stores.
func (r *Reactor) loadLightBlock(height int64) (*cmtproto.LightBlock, error) {
	bs, ss := r.deps.BlockStore, r.deps.StateStore
	if bs == nil || ss == nil || height < bs.Base() || height > bs.Height() {
		return nil, nil
	}
	meta := bs.LoadBlockMeta(height)
	if meta == nil {
		return nil, nil
	}
	commit := bs.LoadBlockCommit(height)
	if commit == nil {
		commit = bs.LoadSeenCommit(height)
	}
	if commit == nil {
		return nil, nil
	}
	vals, err := ss.LoadValidators(height)
	if err != nil || vals == nil {
		return nil, nil //nolint:nilerr // not having it is an answer, not a failure
	}
	lb := &types.LightBlock{
		SignedHeader: &types.SignedHeader{Header: &meta.Header, Commit: commit},
		ValidatorSet: vals,
	}
	return lb.ToProto()
}

// loadParams returns the consensus params at height, or nil when the node
// does not have them.
func (r *Reactor) loadParams(height int64) (*cmtproto.ConsensusParams, error) {
	if r.deps.StateStore == nil {
		return nil, nil
	}
	params, err := r.deps.StateStore.LoadConsensusParams(height)
	if err != nil {
		return nil, nil //nolint:nilerr // not having them is an answer
	}
	p := params.ToProto()
	return &p, nil
}
