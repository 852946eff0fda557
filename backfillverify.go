package statesync

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
)

// errSecondOpinion: the block at the cursor checks out, but its validator
// set does not chain to the verified set above it (a validator-set change,
// or forged proposer priorities): another peer must serve the identical
// set before it is stored. Not the serving peer's fault (yet).
var errSecondOpinion = errors.New("validator set needs a second peer")

// backfillVerifier decides, block by block from the top down, whether a
// served light block may be stored, and with which validator set. Headers
// and commits are bound by the hash chain anchored at the verified state
// (each block must hash to the LastBlockID above it, its commit to the
// LastCommitHash above it); validator membership and power by the
// header's ValidatorsHash. Proposer priorities are bound by nothing a
// header commits to (the gap behind GHSA-g5xx-c4hv-9ccc), so a lower set
// is accepted only when:
//
//   - it chains to the verified set above it: same membership and power,
//     and CometBFT's own rule (types.ValidatorSet.IncrementProposerPriority
//     by one height, as state execution does when no update happened)
//     turns its priorities into the verified ones above; or
//   - where a validator-set change breaks that chain, a second, distinct
//     peer serves the identical set (membership, power and priorities).
//
// A peer whose block fails any check, or whose set is contradicted by the
// set finally accepted at that height, is reported for punishment. Nothing
// unverified is returned. Goroutine-free; the backfill loop owns it.
type backfillVerifier struct {
	chainID string
	topVals *types.ValidatorSet // the verified set at the top (state.LastValidators), may be nil

	upper *types.ValidatorSet // the accepted set at the height above the cursor (nil: at the top)
	votes *setVotes           // the sets served at the cursor, while waiting for a second peer
}

// setVotes tallies the validator sets peers served at one height.
type setVotes struct {
	height int64
	byKey  map[string][]p2p.ID
	sets   map[string]*types.ValidatorSet
}

func setKey(vals *types.ValidatorSet) string {
	return string(vals.Hash()) + string(vals.ProposerPriorityHash())
}

// blockCheck is what the verifier needs to know about the block at the
// cursor: the block ID and commit hash the verified chain above says it
// has (wantCommitHash nil at the top).
type blockCheck struct {
	height         int64
	wantID         types.BlockID
	wantCommitHash []byte
}

// check verifies lb, served by peer, as the block at c.height. On success
// it returns the validator set to store (derived, never the served value
// itself) and the peers that served another set at that height (to be
// punished). errSecondOpinion asks for the height from another peer; any
// other error means peer served a bad block.
func (v *backfillVerifier) check(c blockCheck, lb *types.LightBlock, peer p2p.ID) (*types.ValidatorSet, []p2p.ID, error) {
	if err := v.checkHeader(c, lb); err != nil {
		return nil, nil, err
	}
	served, err := derivedSet(lb)
	if err != nil {
		return nil, nil, err
	}
	vals, err := v.decide(c.height, served, peer)
	if err != nil {
		return nil, nil, err
	}
	if c.wantCommitHash == nil || !bytes.Equal(lb.Commit.Hash(), c.wantCommitHash) {
		// The top block (no header above commits to its commit), or a
		// peer whose top height carries its own seen commit (honest when
		// lagging): the commit must carry +2/3 of the verified set.
		if err := vals.VerifyCommitLight(v.chainID, c.wantID, c.height, lb.Commit); err != nil {
			v.votes = nil
			return nil, nil, fmt.Errorf("commit at height %d: %w", c.height, err)
		}
	}
	var liars []p2p.ID
	if v.votes != nil && v.votes.height == c.height {
		key := setKey(vals)
		for k, peers := range v.votes.byKey {
			if k != key {
				liars = append(liars, peers...)
			}
		}
		sort.Slice(liars, func(i, j int) bool { return liars[i] < liars[j] })
	}
	v.votes = nil
	v.upper = vals
	return vals, liars, nil
}

// checkHeader checks lb's header and commit against the hash chain.
func (v *backfillVerifier) checkHeader(c blockCheck, lb *types.LightBlock) error {
	switch {
	case lb == nil || lb.SignedHeader == nil || lb.Header == nil || lb.Commit == nil || lb.ValidatorSet == nil:
		return errors.New("incomplete light block")
	case lb.Height != c.height:
		return fmt.Errorf("height %d, want %d", lb.Height, c.height)
	case lb.ChainID != v.chainID:
		return fmt.Errorf("chain %q, want %q", lb.ChainID, v.chainID)
	}
	if got := lb.Hash(); !bytes.Equal(got, c.wantID.Hash) {
		return fmt.Errorf("block hash %X, the verified chain says %X", got, c.wantID.Hash)
	}
	if !lb.Commit.BlockID.Equals(c.wantID) {
		return fmt.Errorf("commit for block %v, want %v", lb.Commit.BlockID, c.wantID)
	}
	if lb.Commit.Height != c.height {
		return fmt.Errorf("commit for height %d, want %d", lb.Commit.Height, c.height)
	}
	return nil
}

// derivedSet rebuilds lb's validator set the way CometBFT builds one from
// stored validators (types.ValidatorSetFromExistingValidators: copies,
// canonical order, total power and proposer recomputed from the
// priorities) and checks it against the header.
func derivedSet(lb *types.LightBlock) (*types.ValidatorSet, error) {
	vals := make([]*types.Validator, 0, len(lb.ValidatorSet.Validators))
	for _, val := range lb.ValidatorSet.Validators {
		if val == nil {
			return nil, errors.New("nil validator")
		}
		vals = append(vals, val.Copy())
	}
	set, err := types.ValidatorSetFromExistingValidators(vals)
	if err != nil {
		return nil, fmt.Errorf("validator set at height %d: %w", lb.Height, err)
	}
	if !bytes.Equal(set.Hash(), lb.ValidatorsHash) {
		return nil, fmt.Errorf("validator set at height %d hashes to %X, the header commits to %X", lb.Height,
			set.Hash(), lb.ValidatorsHash)
	}
	if err := checkPriorities(set); err != nil {
		return nil, fmt.Errorf("validator set at height %d: %w", lb.Height, err)
	}
	return set, nil
}

// decide returns the set to accept at height, or errSecondOpinion.
func (v *backfillVerifier) decide(height int64, served *types.ValidatorSet, peer p2p.ID) (*types.ValidatorSet, error) {
	if v.upper == nil {
		// The top: the state's verified set, when it has one.
		if top := v.topVals; top != nil && !top.IsNilOrEmpty() {
			if !bytes.Equal(top.Hash(), served.Hash()) {
				return nil, fmt.Errorf("validator set at height %d is not the verified state's", height)
			}
			return top.Copy(), nil
		}
	} else if chains(served, v.upper) {
		return served, nil
	}
	// Not chained: tally, and accept once two distinct peers agree.
	if v.votes == nil || v.votes.height != height {
		v.votes = &setVotes{height: height, byKey: make(map[string][]p2p.ID),
			sets: make(map[string]*types.ValidatorSet)}
	}
	key := setKey(served)
	for _, id := range v.votes.byKey[key] {
		if id == peer {
			return nil, fmt.Errorf("%w at height %d (peer %s served it already)", errSecondOpinion, height, peer)
		}
	}
	if len(v.votes.byKey) >= maxSetVotes && v.votes.byKey[key] == nil {
		return nil, fmt.Errorf("%w at height %d: too many different sets served", errSecondOpinion, height)
	}
	v.votes.byKey[key] = append(v.votes.byKey[key], peer)
	v.votes.sets[key] = served
	if len(v.votes.byKey[key]) >= 2 {
		return served, nil
	}
	return nil, fmt.Errorf("%w at height %d", errSecondOpinion, height)
}

// maxSetVotes bounds the distinct sets remembered at one height.
const maxSetVotes = 8

// chains reports whether lower, one height below the verified set upper,
// is the set CometBFT would have had there with no validator update in
// between: same membership and power, and one increment of its proposer
// priorities gives upper's.
func chains(lower, upper *types.ValidatorSet) bool {
	return bytes.Equal(lower.Hash(), upper.Hash()) && continues(lower, upper)
}
