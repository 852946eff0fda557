package statesync

import (
	"context"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/light/provider"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// newStores returns CometBFT's own stores over fresh MemDBs, as the
// package's interfaces.
func newStores() (StateStore, BlockStore, sm.Store, *store.BlockStore) {
	ss := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	bs := store.NewBlockStore(dbm.NewMemDB())
	return ss, bs, ss, bs
}

// TestStoresServeWhatTheReactorReads reads a populated pair of CometBFT
// stores through the interfaces, as the serving side does.
func TestStoresServeWhatTheReactorReads(t *testing.T) {
	chain := newChain(t, chaingen.Options{Height: 20, ValSetChanges: map[int64]int{8: 6}})
	stateStore, blockStore, ss, bs := newStores()
	require.NoError(t, chain.Populate(bs, ss, 1, 15))

	require.EqualValues(t, 1, blockStore.Base())
	require.EqualValues(t, 15, blockStore.Height())
	for h := int64(1); h <= 15; h++ {
		meta := blockStore.LoadBlockMeta(h)
		require.NotNil(t, meta, "height %d", h)
		require.Equal(t, chain.Block(h).Hash(), meta.Header.Hash())
		require.Equal(t, chain.Commit(h).BlockID, meta.BlockID)

		vals, err := stateStore.LoadValidators(h)
		require.NoError(t, err)
		require.Equal(t, chain.ValidatorSet(h).Hash(), vals.Hash(), "height %d", h)
		require.Equal(t, chain.ValidatorSet(h).ProposerPriorityHash(), vals.ProposerPriorityHash(), "height %d", h)

		// Populate bootstraps the state after each height, which saves the
		// params from the next height on.
		params, err := stateStore.LoadConsensusParams(h + 1)
		require.NoError(t, err)
		require.Equal(t, chain.Params().Hash(), params.Hash())
	}
	require.Equal(t, chain.Commit(10).Hash(), blockStore.LoadBlockCommit(10).Hash(), "canonical commit, from block 11")
	require.Nil(t, blockStore.LoadBlockCommit(15), "no block 16 yet")
	require.Equal(t, chain.Commit(15).Hash(), blockStore.LoadSeenCommit(15).Hash())
	require.Nil(t, blockStore.LoadBlockMeta(16))
	_, err := stateStore.LoadValidators(100)
	require.Error(t, err)
}

// TestStoresBootstrapFromVerifiedState bootstraps fresh CometBFT stores
// with a state from the light state provider, as Sync does, and reads it
// back with CometBFT's loaders.
func TestStoresBootstrapFromVerifiedState(t *testing.T) {
	chain := newChain(t, chaingen.Options{Height: 30, ValSetChanges: map[int64]int{12: 7, 14: 3},
		StartTime: time.Now().Add(-time.Hour)})
	primary := chain.Provider()
	sp, err := newLightStateProvider(context.Background(), chain.ChainID(), sm.InitStateVersion, 1, primary,
		[]provider.Provider{chain.Provider()}, chain.TrustOptions(1, 24*time.Hour), primary, 5*time.Second, nil)
	require.NoError(t, err)

	for _, h := range []int64{11, 12, 13} { // around two validator-set changes
		state, err := sp.State(context.Background(), uint64(h))
		require.NoError(t, err)
		commit, err := sp.Commit(context.Background(), uint64(h))
		require.NoError(t, err)

		stateStore, blockStore, ss, _ := newStores()
		require.NoError(t, stateStore.Bootstrap(state))
		require.NoError(t, blockStore.SaveSeenCommit(h, commit))

		loaded, err := ss.Load()
		require.NoError(t, err)
		require.Equal(t, h, loaded.LastBlockHeight)
		require.Equal(t, state.AppHash, loaded.AppHash)
		require.Equal(t, chain.Block(h+1).ProposerAddress, loaded.Validators.GetProposer().Address,
			"the proposer of the first block this node executes survives the store")
		for _, vh := range []int64{h, h + 1, h + 2} {
			vals, err := stateStore.LoadValidators(vh)
			require.NoError(t, err, "height %d", vh)
			require.Equal(t, chain.ValidatorSet(vh).Hash(), vals.Hash(), "height %d", vh)
			require.Equal(t, chain.ValidatorSet(vh).ProposerPriorityHash(), vals.ProposerPriorityHash(), "height %d", vh)
		}
		params, err := stateStore.LoadConsensusParams(h + 1)
		require.NoError(t, err)
		require.Equal(t, chain.Params().Hash(), params.Hash())
		require.Equal(t, chain.Commit(h).Hash(), blockStore.LoadSeenCommit(h).Hash())
	}
}
