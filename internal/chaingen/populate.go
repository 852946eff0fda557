package chaingen

import (
	"fmt"

	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
)

// Populate writes heights from..to into the stores the way a CometBFT
// node that committed them would have, through CometBFT's own writers:
//
//   - each block with store.BlockStore.SaveBlock and its commit as the seen
//     commit (so LoadBlockMeta, LoadBlock, LoadSeenCommit work for
//     from..to, and LoadBlockCommit for from..to-1: the canonical commit of
//     h is stored with block h+1);
//   - the state store: if it holds no state yet, Bootstrap with the state
//     after from-1 (the genesis state if from is the initial height), then
//     Save of the state after every height up to to, so that
//     LoadValidators(h) works for from-1 (above the initial height) ..
//     to+2 and LoadConsensusParams(h) for from .. to+1, and Load returns
//     the state after to. If it holds the state after from-1 already (an
//     earlier Populate), Populate continues from there.
//
// CometBFT stores a validator set (and params) in full only at the height
// it changed; later heights refer back to it. A store bootstrapped at
// from-1 has nothing below, so the states Populate saves point no lower
// than the sets Bootstrap stored in full (LastHeightValidatorsChanged >=
// from+1, LastHeightConsensusParamsChanged >= from), exactly as state sync
// leaves a node. The blocks must continue the block store (from =
// bs.Height()+1) unless it is empty.
func (c *Chain) Populate(bs *store.BlockStore, ss sm.Store, from, to int64) error {
	if from < c.opts.InitialHeight || to > c.opts.Height || from > to {
		return fmt.Errorf("%w: populate %d..%d of a chain with heights %d..%d",
			ErrOutOfRange, from, to, c.opts.InitialHeight, c.opts.Height)
	}
	if bs.Base() > 0 && bs.Height()+1 != from {
		return fmt.Errorf("chaingen: block store ends at %d, cannot continue at %d", bs.Height(), from)
	}
	cur, err := ss.Load()
	if err != nil {
		return fmt.Errorf("chaingen: loading state: %w", err)
	}
	var valsFloor, paramsFloor int64
	if cur.IsEmpty() {
		st := c.State(from - 1)
		valsFloor, paramsFloor = from+1, from
		st.LastHeightConsensusParamsChanged = max(st.LastHeightConsensusParamsChanged, paramsFloor)
		if err := ss.Bootstrap(st); err != nil {
			return fmt.Errorf("chaingen: bootstrapping state at %d: %w", from-1, err)
		}
	} else {
		want := from - 1
		if from == c.opts.InitialHeight {
			want = 0 // the genesis state's LastBlockHeight
		}
		if cur.LastBlockHeight != want || cur.ChainID != c.opts.ChainID {
			return fmt.Errorf("chaingen: state store holds %s at height %d, cannot continue at %d",
				cur.ChainID, cur.LastBlockHeight, from)
		}
		valsFloor, paramsFloor = cur.LastHeightValidatorsChanged, cur.LastHeightConsensusParamsChanged
	}
	for h := from; h <= to; h++ {
		bs.SaveBlock(c.blocks[h], c.parts[h], c.commits[h])
		st := c.State(h)
		st.LastHeightValidatorsChanged = max(st.LastHeightValidatorsChanged, valsFloor)
		st.LastHeightConsensusParamsChanged = max(st.LastHeightConsensusParamsChanged, paramsFloor)
		if err := ss.Save(st); err != nil {
			return fmt.Errorf("chaingen: saving state at %d: %w", h, err)
		}
	}
	return nil
}
