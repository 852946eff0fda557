package statesync

import (
	"bytes"
	"fmt"

	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"
)

// loadLightBlock builds the light block at height for a peer: the header
// from the block store's meta, the commit of that height (the canonical
// one stored with the block above, or the node's seen commit when there is
// no block above yet — the top height, or a state-synced node's snapshot
// height), and the validator set from the state store. Heights backfilled
// below the block store's base are served too: the loaders do not consult
// the base. It returns nil, nil when the node lacks any part (or has no
// stores), and an error only when the stores disagree with each other.
func (r *Reactor) loadLightBlock(height int64) (*cmtproto.LightBlock, error) {
	bs, ss := r.deps.BlockStore, r.deps.StateStore
	if bs == nil || ss == nil || height <= 0 {
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
	if err != nil || vals.IsNilOrEmpty() {
		return nil, nil //nolint:nilerr // not having them is an answer, not a failure
	}
	if !bytes.Equal(vals.Hash(), meta.Header.ValidatorsHash) {
		return nil, fmt.Errorf("the stored validator set at height %d hashes to %X, its header says %X",
			height, vals.Hash(), meta.Header.ValidatorsHash)
	}
	if !bytes.Equal(commit.BlockID.Hash, meta.BlockID.Hash) {
		return nil, fmt.Errorf("the stored commit at height %d is for block %X, the header is block %X",
			height, commit.BlockID.Hash, meta.BlockID.Hash)
	}
	header := meta.Header
	lb := &types.LightBlock{
		SignedHeader: &types.SignedHeader{Header: &header, Commit: commit},
		ValidatorSet: vals,
	}
	return lb.ToProto()
}

// cachedLightBlock is loadLightBlock through the light-block cache: the
// heights peers ask for most (a snapshot's h, h+1 and h+2, asked by every
// peer restoring it; a range being backfilled by several peers) are loaded
// once, and concurrent requests for one height share a load. loaded
// reports whether this call did the loading.
func (r *Reactor) cachedLightBlock(height int64) (lb *cmtproto.LightBlock, loaded bool, err error) {
	return r.lights.load(height, func() (*cmtproto.LightBlock, error) { return r.loadLightBlock(height) })
}

// loadParams returns the consensus params in force at height, or nil, nil
// when the node does not have them (backfilled heights have none).
func (r *Reactor) loadParams(height int64) (*cmtproto.ConsensusParams, error) {
	if r.deps.StateStore == nil || height <= 0 {
		return nil, nil
	}
	params, err := r.deps.StateStore.LoadConsensusParams(height)
	if err != nil {
		return nil, nil //nolint:nilerr // not having them is an answer
	}
	p := params.ToProto()
	return &p, nil
}
