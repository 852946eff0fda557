package statesync

import (
	"context"
	"testing"
	"time"

	"github.com/cometbft/cometbft/light/provider"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

func newChain(t *testing.T, opts chaingen.Options) *chaingen.Chain {
	t.Helper()
	c, err := chaingen.New(opts)
	require.NoError(t, err)
	return c
}

func lightProvider(t *testing.T, c *chaingen.Chain, primary, witness *chaingen.Provider, params ParamsSource,
	trust int64, period time.Duration, timeout time.Duration,
) (*lightStateProvider, error) {
	t.Helper()
	return newLightStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, c.InitialHeight(),
		primary, []provider.Provider{witness}, c.TrustOptions(trust, period), params, timeout, nil)
}

// TestLightStateProviderState checks every field of State against the
// chain, across validator-set changes, with an initial height above 1.
func TestLightStateProviderState(t *testing.T) {
	c := newChain(t, chaingen.Options{InitialHeight: 5, Height: 40, ValSetChanges: map[int64]int{12: 6, 21: 3, 23: 5},
		StartTime: time.Now().Add(-time.Hour)})
	p := c.Provider()
	sp, err := lightProvider(t, c, p, c.Provider(), p, 5, 24*time.Hour, 5*time.Second)
	require.NoError(t, err)
	for _, h := range []int64{10, 20, 21, 22, 30} {
		want := c.State(h)
		got, err := sp.State(context.Background(), uint64(h))
		require.NoError(t, err, "height %d", h)
		require.Equal(t, want.ChainID, got.ChainID)
		require.Equal(t, int64(5), got.InitialHeight)
		require.Equal(t, want.LastBlockHeight, got.LastBlockHeight)
		require.Equal(t, want.LastBlockID, got.LastBlockID)
		require.True(t, want.LastBlockTime.Equal(got.LastBlockTime))
		require.Equal(t, want.LastValidators.Hash(), got.LastValidators.Hash(), "height %d", h)
		require.Equal(t, want.Validators.Hash(), got.Validators.Hash(), "height %d", h)
		require.Equal(t, want.NextValidators.Hash(), got.NextValidators.Hash(), "height %d", h)
		require.Equal(t, h+2, got.LastHeightValidatorsChanged)
		require.Equal(t, want.ConsensusParams.Hash(), got.ConsensusParams.Hash())
		require.Equal(t, h+1, got.LastHeightConsensusParamsChanged)
		require.Equal(t, want.AppHash, got.AppHash)
		require.Equal(t, want.LastResultsHash, got.LastResultsHash)
		require.Equal(t, c.Block(h+1).Version, got.Version.Consensus)

		appHash, err := sp.AppHash(context.Background(), uint64(h))
		require.NoError(t, err)
		require.Equal(t, []byte(c.Block(h+1).AppHash), appHash)
		commit, err := sp.Commit(context.Background(), uint64(h))
		require.NoError(t, err)
		require.Equal(t, c.Commit(h).Hash(), commit.Hash())
	}
}

type badParams struct{}

func (badParams) ConsensusParams(context.Context, int64) (types.ConsensusParams, error) {
	p := types.DefaultConsensusParams()
	p.Block.MaxBytes = 12345
	return *p, nil
}

func TestLightStateProviderRejectsForgedParams(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 10, StartTime: time.Now().Add(-time.Hour)})
	sp, err := lightProvider(t, c, c.Provider(), c.Provider(), badParams{}, 1, 24*time.Hour, 5*time.Second)
	require.NoError(t, err)
	_, err = sp.State(context.Background(), 5)
	require.ErrorIs(t, err, ErrVerifyFailed)
	require.ErrorContains(t, err, "ConsensusHash")
}

func TestLightStateProviderTipAndTransient(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 10, StartTime: time.Now().Add(-time.Hour)})
	p := c.Provider()
	sp, err := lightProvider(t, c, p, c.Provider(), p, 1, 24*time.Hour, 200*time.Millisecond)
	require.NoError(t, err)
	_, err = sp.AppHash(context.Background(), 9) // 11 does not exist
	require.ErrorIs(t, err, ErrHeightNotAvailable)

	gate := make(chan struct{})
	defer close(gate)
	p.Block(gate)
	_, err = sp.AppHash(context.Background(), 5)
	require.ErrorIs(t, err, ErrProviderTransient, "a provider that hangs times out as a transient error")
}

func TestLightStateProviderExpiredTrust(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 10, StartTime: time.Now().Add(-48 * time.Hour)})
	_, err := lightProvider(t, c, c.Provider(), c.Provider(), c.Provider(), 1, time.Hour, time.Second)
	require.ErrorIs(t, err, ErrTrustExpired)
	require.ErrorContains(t, err, "trust height 1")
}

func TestRPCStateProviderNeedsTwoDistinctServers(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 3})
	for _, servers := range [][]string{
		nil,
		{"127.0.0.1:26657"},
		{"127.0.0.1:26657", "http://127.0.0.1:26657/", "HTTP://127.0.0.1:26657"},
	} {
		_, err := NewRPCStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, 1, servers,
			c.TrustOptions(1, time.Hour), time.Second, nil)
		require.ErrorIs(t, err, ErrNotEnoughPeers, "%v", servers)
		require.ErrorContains(t, err, "same server twice")
	}
}

func TestRPCStateProviderUnreachableIsTransient(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 3, StartTime: time.Now().Add(-time.Hour)})
	// Ports nobody listens on: connection refused.
	_, err := NewRPCStateProvider(context.Background(), c.ChainID(), sm.InitStateVersion, 1,
		[]string{"127.0.0.1:1", "127.0.0.1:2"}, c.TrustOptions(1, time.Hour), 2*time.Second, nil)
	require.Error(t, err)
	require.ErrorIs(t, err, ErrProviderTransient)
}

func TestCheckPriorities(t *testing.T) {
	c := newChain(t, chaingen.Options{Height: 3})
	vals := c.ValidatorSet(2).Copy()
	require.NoError(t, checkPriorities(vals))
	vals.Validators[0].ProposerPriority = 10 * vals.TotalVotingPower()
	require.Error(t, checkPriorities(vals))
}
