package statesync

import (
	"bytes"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// saveChain writes heights from..to of chain (highest first, as backfill
// does) into s, with one validator record per run of equal sets.
func saveChain(t testing.TB, s BackfillStore, chain *chaingen.Chain, from, to int64) {
	t.Helper()
	hi := to
	for h := to; h >= from; h-- {
		lb := chain.LightBlock(h)
		require.NoError(t, s.SaveSignedHeader(chain.Commit(h).BlockID, lb.SignedHeader))
		if h == from || !bytes.Equal(chain.ValidatorSet(h-1).Hash(), lb.ValidatorSet.Hash()) {
			require.NoError(t, s.SaveValidatorSets(h, hi, lb.ValidatorSet))
			hi = h - 1
		}
	}
	require.NoError(t, s.Flush())
}

// TestDBBackfillStoreReadByCometBFT writes a chain with validator-set
// changes, across a validator checkpoint height (100000), and reads it back
// with CometBFT v0.40's own block and state stores. The validator sets must
// equal those CometBFT itself stores for the same chain, priorities
// included.
func TestDBBackfillStoreReadByCometBFT(t *testing.T) {
	const first, last = 99_985, 100_030
	chain := testChain(t, chaingen.Options{
		InitialHeight: first - 5, Height: last + 3, Validators: 4,
		ValSetChanges: map[int64]int{99_990: 6, 100_004: 3, 100_005: 5, 100_020: 7},
	})
	blockDB, stateDB := dbm.NewMemDB(), dbm.NewMemDB()
	saveChain(t, NewDBBackfillStore(blockDB, stateDB), chain, first, last)

	// What CometBFT stores when it runs the same chain.
	refBlocks := store.NewBlockStore(dbm.NewMemDB())
	refState := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	require.NoError(t, chain.Populate(refBlocks, refState, chain.InitialHeight(), last+1))

	bs := store.NewBlockStore(blockDB)
	ss := sm.NewStore(stateDB, sm.StoreOptions{})
	for h := int64(first); h <= last; h++ {
		block := chain.Block(h)
		id := chain.Commit(h).BlockID

		meta := bs.LoadBlockMeta(h)
		require.NotNil(t, meta, "height %d", h)
		require.Equal(t, id, meta.BlockID)
		require.Equal(t, block.Header.Hash(), meta.Header.Hash())
		require.Equal(t, -1, meta.BlockSize)
		require.Equal(t, -1, meta.NumTxs)
		require.NoError(t, meta.ValidateBasic())

		byHash := bs.LoadBlockMetaByHash(id.Hash)
		require.NotNil(t, byHash)
		require.Equal(t, h, byHash.Header.Height)
		require.Nil(t, bs.LoadBlock(h), "no block parts: CometBFT reports the block missing, without panicking")
		require.Nil(t, bs.LoadBlockByHash(id.Hash))

		commit := bs.LoadBlockCommit(h)
		require.NotNil(t, commit)
		require.Equal(t, chain.Commit(h).Hash(), commit.Hash())
		require.Equal(t, id, commit.BlockID)
		require.Equal(t, refBlocks.LoadBlockCommit(h).Hash(), commit.Hash())

		vals, err := ss.LoadValidators(h)
		require.NoError(t, err, "height %d", h)
		want, err := refState.LoadValidators(h)
		require.NoError(t, err)
		require.Equal(t, chain.ValidatorSet(h).Hash(), vals.Hash(), "height %d", h)
		require.Equal(t, want.ProposerPriorityHash(), vals.ProposerPriorityHash(), "priorities at height %d", h)
		require.Equal(t, chain.ValidatorSet(h).ProposerPriorityHash(), vals.ProposerPriorityHash(), "height %d", h)
	}
	// Heights outside the range are absent; the base is untouched (so
	// CometBFT's pruning, which starts at the base, never removes them).
	require.Nil(t, bs.LoadBlockMeta(first-1))
	require.Nil(t, bs.LoadBlockCommit(last+1))
	_, err := ss.LoadValidators(first - 1)
	require.Error(t, err)
	require.Zero(t, bs.Base())
	require.Zero(t, bs.Height())
}

// TestDBBackfillStoreLongRun stores one validator set for a long run of
// heights and checks the derived priorities at every height, through a
// checkpoint.
func TestDBBackfillStoreLongRun(t *testing.T) {
	chain := testChain(t, chaingen.Options{InitialHeight: 99_950, Height: 100_060, Validators: 7})
	_, stateDB := dbm.NewMemDB(), dbm.NewMemDB()
	s := NewDBBackfillStore(dbm.NewMemDB(), stateDB)
	require.NoError(t, s.SaveValidatorSets(99_960, 100_050, chain.ValidatorSet(99_960)))
	require.NoError(t, s.Flush())
	ss := sm.NewStore(stateDB, sm.StoreOptions{})
	for h := int64(99_960); h <= 100_050; h++ {
		vals, err := ss.LoadValidators(h)
		require.NoError(t, err)
		require.Equal(t, chain.ValidatorSet(h).ProposerPriorityHash(), vals.ProposerPriorityHash(), "height %d", h)
	}
}

func TestDBBackfillStoreRejectsBadInput(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 5})
	s := NewDBBackfillStore(dbm.NewMemDB(), dbm.NewMemDB())
	require.Error(t, s.SaveValidatorSets(3, 2, chain.ValidatorSet(3)))
	require.Error(t, s.SaveValidatorSets(0, 2, chain.ValidatorSet(3)))
	require.Error(t, s.SaveValidatorSets(1, 2, nil))
	require.Error(t, s.SaveSignedHeader(chain.Commit(2).BlockID, nil))
	require.NoError(t, s.Flush()) // nothing buffered
}
