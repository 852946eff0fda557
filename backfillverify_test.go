package statesync

import (
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// TestBackfillPriorityForger: a peer serving the right headers with forged
// proposer priorities (which no header commits to) gets none of them
// stored or served on: every stored set has the chain's priorities, and
// the forger is punished. Before, heights it served were stored with its
// priorities.
func TestBackfillPriorityForger(t *testing.T) {
	chain := testChain(t, chaingen.Options{ChainID: "chain", Height: 80})
	n := newBackfillNode(t, chain, nil)
	n.net.add("forger", &fakePeer{chain: chain, forge: func(lb *types.LightBlock) {
		if lb.Height >= 30 && lb.Height < 50 {
			shiftPriorities(lb.ValidatorSet)
		}
	}})
	n.net.add("honest", &fakePeer{chain: chain, delay: time.Millisecond})
	res, err := n.r.Backfill(backfillCtx(t), stateWithEvidence(chain, 60, 40, time.Nanosecond))
	require.NoError(t, err)
	require.Equal(t, int64(20), res.To)
	requireBackfilled(t, n, chain, 20, 60)
	punished := n.net.punishedPeers()
	require.Contains(t, punished, p2p.ID("forger"))
	require.ErrorIs(t, punished["forger"], ErrPeerMisbehaved)
	require.NotContains(t, punished, p2p.ID("honest"))
}

// TestBackfillValidatorChangeNeedsTwoPeers: where a validator-set change
// breaks the priority chain, one peer alone cannot get the set below it
// stored: backfill stops above it, storing nothing unverified.
func TestBackfillValidatorChangeNeedsTwoPeers(t *testing.T) {
	chain := testChain(t, chaingen.Options{ChainID: "chain", Height: 80, ValSetChanges: map[int64]int{40: 6}})
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 100 * time.Millisecond })
	n.net.add("only", &fakePeer{chain: chain})
	res, err := n.r.Backfill(backfillCtx(t), stateWithEvidence(chain, 60, 50, time.Nanosecond))
	require.ErrorIs(t, err, ErrBackfill)
	require.Equal(t, BackfillRetriesExhausted, res.Stopped)
	change := chain.ValSetChanges()
	require.NotEmpty(t, change)
	// Everything stored checks out against the chain; nothing at or below
	// the height whose set could not be confirmed.
	requireBackfilled(t, n, chain, res.To, 60)
	require.NotContains(t, n.net.punishedPeers(), p2p.ID("only"), "an honest peer is not punished")

	n.net.add("second", &fakePeer{chain: chain})
	res, err = n.r.Backfill(backfillCtx(t), stateWithEvidence(chain, 60, 50, time.Nanosecond))
	require.NoError(t, err)
	requireBackfilled(t, n, chain, 10, 60)
}

// TestBackfillVerifierSeenCommit: a peer whose top height is the one asked
// serves its own seen commit there (other signatures than the canonical
// commit the header above names). That is honest: the block is accepted
// when the commit carries +2/3 of the verified set (before, the peer was
// punished); a commit that does not is refused.
func TestBackfillVerifierSeenCommit(t *testing.T) {
	chain := testChain(t, chaingen.Options{ChainID: "chain", Height: 80})
	state := chain.State(60)
	v := &backfillVerifier{chainID: chain.ChainID(), topVals: state.LastValidators}
	c := blockCheck{height: 60, wantID: state.LastBlockID}
	_, _, err := v.check(c, chain.LightBlock(60), "a")
	require.NoError(t, err)

	seen := chain.LightBlock(59)
	sigs := seen.Commit.Signatures
	sigs[len(sigs)-1] = types.NewCommitSigAbsent() // one vote fewer: still +2/3
	c = blockCheck{height: 59, wantID: chain.BlockID(59), wantCommitHash: chain.LightBlock(60).LastCommitHash}
	require.NotEqual(t, c.wantCommitHash, seen.Commit.Hash().Bytes())
	vals, liars, err := v.check(c, seen, "lagging")
	require.NoError(t, err)
	require.Empty(t, liars)
	require.Equal(t, chain.ValidatorSet(59).ProposerPriorityHash(), vals.ProposerPriorityHash())

	weak := chain.LightBlock(58)
	for i := range weak.Commit.Signatures[1:] {
		weak.Commit.Signatures[i+1] = types.NewCommitSigAbsent()
	}
	c = blockCheck{height: 58, wantID: chain.BlockID(58), wantCommitHash: chain.LightBlock(59).LastCommitHash}
	_, _, err = v.check(c, weak, "liar")
	require.ErrorContains(t, err, "commit at height 58")
}
