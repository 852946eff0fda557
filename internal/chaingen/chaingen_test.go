package chaingen

import (
	"context"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The real light client verifies the chain across validator-set changes,
// from an initial height above 1.
func TestLightClientVerifiesChain(t *testing.T) {
	c, err := New(Options{InitialHeight: 3, Height: 60, ValSetChanges: map[int64]int{10: 7, 30: 4, 31: 9},
		StartTime: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	lc, err := light.NewClient(context.Background(), c.ChainID(), c.TrustOptions(3, 24*time.Hour),
		c.Provider(), []provider.Provider{c.Provider()}, lightdb.New(dbm.NewMemDB(), ""))
	require.NoError(t, err)
	for _, h := range []int64{9, 10, 31, 60} {
		lb, err := lc.VerifyLightBlockAtHeight(context.Background(), h, time.Now())
		require.NoError(t, err, "height %d", h)
		require.Equal(t, c.Block(h).Hash(), lb.Hash())
	}
}

// Populate writes what CometBFT's own loaders read back.
func TestPopulate(t *testing.T) {
	c, err := New(Options{Height: 20, ValSetChanges: map[int64]int{8: 6}})
	require.NoError(t, err)
	bs := store.NewBlockStore(dbm.NewMemDB())
	ss := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
	require.NoError(t, c.Populate(bs, ss, 1, 17))
	for h := int64(1); h <= 17; h++ {
		meta := bs.LoadBlockMeta(h)
		require.NotNil(t, meta)
		require.Equal(t, c.Block(h).Hash(), meta.BlockID.Hash)
		require.Equal(t, c.Commit(h).Hash(), bs.LoadSeenCommit(h).Hash())
		vals, err := ss.LoadValidators(h)
		require.NoError(t, err)
		require.Equal(t, c.ValidatorSet(h).Hash(), vals.Hash(), "height %d", h)
		params, err := ss.LoadConsensusParams(h + 1)
		require.NoError(t, err)
		require.Equal(t, c.Params().Hash(), params.Hash())
	}
	st, err := ss.Load()
	require.NoError(t, err)
	require.Equal(t, int64(17), st.LastBlockHeight)
}
