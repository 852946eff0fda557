package statesync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecideParamsNamesEveryCamp: when sources disagree on fields no
// header commits to, the error names every source and what it sent, and a
// source whose params contradict the header's hash is left out (listed as
// provably wrong) without counting as a camp.
func TestDecideParamsNamesEveryCamp(t *testing.T) {
	chain := p2pChain(t, 5, nil)
	honest := chain.Params()
	unhashed := honest
	unhashed.Evidence.MaxAgeNumBlocks += 7
	hashed := honest
	hashed.Block.MaxGas += 7
	want := honest.Hash()

	votes := []paramsVote{
		{source: "peer a", params: honest},
		{source: "peer b", params: hashed},
		{source: "peer c", params: honest},
		{source: "peer d", params: unhashed},
	}
	_, wrong, err := decideParams(3, want, votes, 2)
	require.Equal(t, []int{1}, wrong, "the hash forger is provably wrong")
	require.ErrorIs(t, err, ErrProvidersDisagree)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorContains(t, err, "peer a, peer c sent")
	require.ErrorContains(t, err, "peer d sent")
	require.NotContains(t, err.Error(), "peer b sent")

	// Without the unhashed forger the two honest sources decide: the
	// hash forger is left out by proof, not outvoted.
	params, wrong, err := decideParams(3, want, votes[:3], 2)
	require.NoError(t, err)
	require.Equal(t, []int{1}, wrong)
	require.Equal(t, honest, params)
}
