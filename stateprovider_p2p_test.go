package statesync

import (
	"context"
	"fmt"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light/provider"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// p2pChain is a chain whose blocks are recent enough for a light
// client's trust period.
func p2pChain(t testing.TB, height int64, changes map[int64]int) *chaingen.Chain {
	return testChain(t, chaingen.Options{ChainID: "p2p-chain", Height: height, ValSetChanges: changes,
		StartTime: time.Now().Add(-time.Hour)})
}

func requireStateMatches(t *testing.T, chain *chaingen.Chain, h int64, got StateProvider) {
	t.Helper()
	ctx := backfillCtx(t)
	want := chain.State(h)
	state, err := got.State(ctx, uint64(h))
	require.NoError(t, err)
	require.Equal(t, want.ChainID, state.ChainID)
	require.Equal(t, want.LastBlockHeight, state.LastBlockHeight)
	require.Equal(t, want.LastBlockID, state.LastBlockID)
	require.Equal(t, want.AppHash, state.AppHash)
	require.Equal(t, want.LastValidators.Hash(), state.LastValidators.Hash())
	require.Equal(t, want.Validators.Hash(), state.Validators.Hash())
	require.Equal(t, want.NextValidators.Hash(), state.NextValidators.Hash())
	require.Equal(t, want.ConsensusParams.Hash(), state.ConsensusParams.Hash())
	appHash, err := got.AppHash(ctx, uint64(h))
	require.NoError(t, err)
	require.Equal(t, []byte(chain.Block(h+1).AppHash), appHash)
	commit, err := got.Commit(ctx, uint64(h))
	require.NoError(t, err)
	require.Equal(t, chain.Commit(h).Hash(), commit.Hash())
}

// TestP2PStateProviderVerifiesFromPeers: light blocks and params from
// three peers, across validator-set changes.
func TestP2PStateProviderVerifiesFromPeers(t *testing.T) {
	chain := p2pChain(t, 40, map[int64]int{12: 6, 21: 3, 23: 5})
	n := newBackfillNode(t, chain, nil)
	for _, id := range []p2p.ID{"a", "b", "c"} {
		n.net.add(id, &fakePeer{chain: chain, delay: time.Millisecond})
	}
	sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.NoError(t, err)
	p := sp.(*p2pStateProvider)
	require.Len(t, p.used, 3, "every capable peer is a source (below the cap)")
	for _, h := range []int64{10, 20, 21, 22, 30} {
		requireStateMatches(t, chain, h, sp)
	}
	require.Empty(t, n.net.punishedPeers())
}

// TestP2PStateProviderCapsAndDeduplicates: at most maxP2PProviders
// distinct peers become sources.
func TestP2PStateProviderCapsAndDeduplicates(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	n := newBackfillNode(t, chain, nil)
	for i := range 8 {
		n.net.add(p2p.ID(rune('a'+i)), &fakePeer{chain: chain})
	}
	n.r.PeerUp("a", allChannels) // the same peer announced again, without PeerDown
	sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.NoError(t, err)
	used := sp.(*p2pStateProvider).used
	require.Len(t, used, maxP2PProviders)
	seen := map[p2p.ID]bool{}
	for _, id := range used {
		require.False(t, seen[id], "peer %s twice", id)
		seen[id] = true
	}
	requireStateMatches(t, chain, 10, sp)
}

// TestP2PStateProviderNeedsTwoPeers: with one peer speaking 0x62/0x63
// (and another that speaks only the snapshot channels) the provider waits
// within its bound and fails clearly; a second capable peer ends the wait.
func TestP2PStateProviderNeedsTwoPeers(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	n := newBackfillNode(t, chain, func(c *Config) {
		c.DiscoveryTime = 50 * time.Millisecond
		c.DiscoveryTimeout = 300 * time.Millisecond
	})
	n.net.add("capable", &fakePeer{chain: chain})
	n.net.add("stock", &fakePeer{chain: chain, channels: []byte{SnapshotChannel, ChunkChannel}})
	start := time.Now()
	_, err := newP2PStateProvider(context.Background(), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.ErrorIs(t, err, ErrNotEnoughPeers)
	require.ErrorContains(t, err, "1 of 2 connected peers serve them")
	require.Less(t, time.Since(start), 5*time.Second)
	require.Zero(t, n.net.requestsTo("stock"), "a peer without the channels is never asked")

	// The caller's context bounds the wait too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = newP2PStateProvider(ctx, n.r, chain.TrustOptions(1, 24*time.Hour))
	require.ErrorIs(t, err, ErrNotEnoughPeers)

	// A second capable peer arriving during the wait is used.
	n.r.cfg.DiscoveryTimeout = 20 * time.Second
	done := make(chan error, 1)
	go func() {
		sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
		if err == nil {
			_, err = sp.AppHash(backfillCtx(t), 10)
		}
		done <- err
	}()
	n.net.add("late", &fakePeer{chain: chain})
	require.NoError(t, <-done)
}

// TestP2PStateProviderReplacesDepartedPeers: sources that disconnect are
// replaced by peers that connected later.
func TestP2PStateProviderReplacesDepartedPeers(t *testing.T) {
	chain := p2pChain(t, 30, map[int64]int{15: 5})
	n := newBackfillNode(t, chain, nil)
	n.net.add("a", &fakePeer{chain: chain})
	n.net.add("b", &fakePeer{chain: chain})
	sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.NoError(t, err)
	requireStateMatches(t, chain, 10, sp)

	n.net.remove("a")
	n.net.remove("b")
	n.net.add("c", &fakePeer{chain: chain})
	n.net.add("d", &fakePeer{chain: chain})
	requireStateMatches(t, chain, 20, sp)
	require.ElementsMatch(t, []p2p.ID{"c", "d"}, sp.(*p2pStateProvider).used)

	// Not enough peers any more: a transient error (the snapshot is kept),
	// bounded by the verify timeout.
	n.r.cfg.VerifyTimeout = 200 * time.Millisecond
	sp.(*p2pStateProvider).verifyTimeout = 200 * time.Millisecond
	n.net.remove("c")
	_, err = sp.AppHash(backfillCtx(t), 12)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorIs(t, err, ErrNotEnoughPeers)
}

// TestP2PParamsHashMismatchPunished: a peer serving params that do not
// hash to the verified header's ConsensusHash is punished, and the params
// two honest peers agree on are used.
func TestP2PParamsHashMismatchPunished(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	forged := chain.Params()
	forged.Block.MaxGas = 12345
	n := newBackfillNode(t, chain, nil)
	n.net.add("forger", &fakePeer{chain: chain, params: &forged})
	n.net.add("honest1", &fakePeer{chain: chain, delay: 20 * time.Millisecond})
	n.net.add("honest2", &fakePeer{chain: chain, delay: 20 * time.Millisecond})

	want := chain.Block(11).ConsensusHash
	params, err := n.r.fetchParams(backfillCtx(t), 11, want, []p2p.ID{"forger", "honest1"})
	require.NoError(t, err)
	require.Equal(t, chain.Params(), params)
	punished := n.net.punishedPeers()
	require.Contains(t, punished, p2p.ID("forger"))
	require.ErrorIs(t, punished["forger"], ErrPeerMisbehaved)
	require.ErrorIs(t, punished["forger"], ErrVerifyFailed)
	require.NotContains(t, punished, p2p.ID("honest1"))
	require.NotContains(t, punished, p2p.ID("honest2"))
}

// TestP2PParamsUnhashedFieldsNeedQuorum: the header's ConsensusHash covers
// only the block size and gas limits, so a peer can forge the other params
// with a matching hash. Every peer that answers must agree: one forger and
// one honest peer, or two colluding forgers and one honest peer, give no
// answer (a transient failure, at once), and the forgery is never
// installed; once the forgers are gone, two honest peers settle it.
func TestP2PParamsUnhashedFieldsNeedQuorum(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	forged := chain.Params()
	forged.Evidence.MaxAgeNumBlocks = 7
	forged.ABCI.VoteExtensionsEnableHeight = 3
	require.Equal(t, chain.Params().Hash(), forged.Hash(), "the forgery is not covered by the hash")
	// Every peer answers, so the outcome cannot depend on a timeout: the
	// light-block timeout is far above any scheduling delay (it only
	// bounds a test that would otherwise hang), and no answer is delayed.
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = time.Minute })
	n.net.add("forger", &fakePeer{chain: chain, params: &forged})
	n.net.add("honest1", &fakePeer{chain: chain})

	_, err := n.r.fetchParams(backfillCtx(t), 11, chain.Block(11).ConsensusHash, nil)
	require.ErrorIs(t, err, ErrProvidersDisagree)
	require.ErrorIs(t, err, ErrProviderTransient)
	require.ErrorContains(t, err, "disagree")

	n.net.add("forger2", &fakePeer{chain: chain, params: &forged})
	_, err = n.r.fetchParams(backfillCtx(t), 11, chain.Block(11).ConsensusHash, nil)
	require.ErrorIs(t, err, ErrProvidersDisagree, "two colluding peers do not outvote an honest one")

	n.net.remove("forger")
	n.net.remove("forger2")
	n.net.add("honest2", &fakePeer{chain: chain})
	sp, err := newP2PStateProvider(backfillCtx(t), n.r, chain.TrustOptions(1, 24*time.Hour))
	require.NoError(t, err)
	requireStateMatches(t, chain, 10, sp)
	state, err := sp.State(backfillCtx(t), 10)
	require.NoError(t, err)
	require.Equal(t, chain.Params(), state.ConsensusParams)
}

// TestP2PParamsRetryWithBackoff: peers that do not answer params are
// asked again (with backoff) until one does, or ctx ends.
func TestP2PParamsRetryWithBackoff(t *testing.T) {
	chain := p2pChain(t, 20, nil)
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 50 * time.Millisecond })
	n.net.add("mute1", &fakePeer{chain: chain, noParams: true})
	n.net.add("mute2", &fakePeer{chain: chain, noParams: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := n.r.fetchParams(ctx, 5, nil, nil)
	require.ErrorIs(t, err, provider.ErrNoResponse)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, n.net.requestsTo("mute1"), 2, "asked again")

	done := make(chan error, 1)
	go func() {
		_, err := n.r.fetchParams(backfillCtx(t), 5, chain.Block(5).ConsensusHash, nil)
		done <- err
	}()
	n.net.add("speaks1", &fakePeer{chain: chain})
	n.net.add("speaks2", &fakePeer{chain: chain})
	require.NoError(t, <-done)
}

// TestBlockProvider covers the light provider's error mapping.
func TestBlockProvider(t *testing.T) {
	chain := p2pChain(t, 10, nil)
	other := testChain(t, chaingen.Options{ChainID: "other", Height: 10})
	n := newBackfillNode(t, chain, func(c *Config) { c.LightBlockTimeout = 50 * time.Millisecond })
	n.net.add("good", &fakePeer{chain: chain, top: 8})
	n.net.add("silent", &fakePeer{chain: chain, drop: true})
	n.net.add("foreign", &fakePeer{chain: chain, impostor: other})
	ctx := backfillCtx(t)

	good := n.r.BlockProvider(chain.ChainID(), "good")
	require.Equal(t, chain.ChainID(), good.ChainID())
	require.Equal(t, "good", good.String())
	lb, err := good.LightBlock(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, chain.Block(5).Hash(), lb.Hash())
	_, err = good.LightBlock(ctx, 9)
	require.Equal(t, provider.ErrLightBlockNotFound, err, "identity: the light client compares errors with ==")
	_, err = good.LightBlock(ctx, 0)
	require.Equal(t, provider.ErrLightBlockNotFound, err)
	require.NoError(t, good.ReportEvidence(ctx, nil))

	_, err = n.r.BlockProvider(chain.ChainID(), "silent").LightBlock(ctx, 5)
	require.Equal(t, provider.ErrNoResponse, err)

	_, err = n.r.BlockProvider(chain.ChainID(), "foreign").LightBlock(ctx, 5)
	var bad provider.ErrBadLightBlock
	require.ErrorAs(t, err, &bad)
	require.Contains(t, n.net.punishedPeers(), p2p.ID("foreign"))

	_, err = n.r.BlockProvider(chain.ChainID(), "nobody").LightBlock(ctx, 5)
	require.ErrorIs(t, err, ErrNoPeers)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = good.LightBlock(cctx, 5)
	require.Equal(t, context.Canceled, err)
}

// TestSyncOverP2PThenBackfill: a fresh node configured with use_p2p and
// no RPC server restores a snapshot from three serving nodes over real
// MConnections, verifying it with light blocks and params fetched from its
// peers, and Sync then backfills every height below the snapshot:
// CometBFT's own loaders return the meta, commit and validators of each,
// equal to the source chain's, and the node serves them as light blocks.
func TestSyncOverP2PThenBackfill(t *testing.T) {
	const height = 60
	appOpts := kvapp.Options{Keys: 300, ValueSize: 256, ChunkSize: 8 << 10, Height: height}
	srcHash := kvapp.New(appOpts).AppHash()
	chain := testChain(t, chaingen.Options{
		ChainID: "p2p-sync", Height: height + 4, StartTime: time.Now().Add(-time.Hour),
		ValSetChanges: map[int64]int{20: 5, 40: 3, 41: 6, height + 2: 4},
		AppHash: func(h int64) []byte {
			if h == height+1 {
				return srcHash
			}
			return nil
		},
	})

	reactors := make([]map[string]p2p.Reactor, 0, 4)
	for range 3 {
		bs := store.NewBlockStore(dbm.NewMemDB())
		ss := sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{})
		require.NoError(t, chain.Populate(bs, ss, 1, height+3))
		conns := newAppConns(t, kvapp.New(appOpts))
		r, err := NewReactor(testConfig(), Deps{Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: ss, BlockStore: bs, Genesis: chain.GenesisState(), Logger: log.NewNopLogger()})
		require.NoError(t, err)
		reactors = append(reactors, map[string]p2p.Reactor{"STATESYNC": r})
	}
	freshApp := kvapp.New(kvapp.Options{})
	conns := newAppConns(t, freshApp)
	blockDB, stateDB := dbm.NewMemDB(), dbm.NewMemDB()
	trust := chain.TrustOptions(1, 24*time.Hour)
	cfg := testConfig()
	cfg.UseP2P = true
	cfg.RPCServers = nil
	cfg.TempDir = t.TempDir()
	cfg.TrustHeight, cfg.TrustHash, cfg.TrustPeriod = trust.Height, fmt.Sprintf("%X", trust.Hash), trust.Period
	fresh, err := NewReactor(cfg, Deps{Snapshots: conns.Snapshot(), Query: conns.Query(),
		StateStore: sm.NewStore(stateDB, sm.StoreOptions{}), BlockStore: store.NewBlockStore(blockDB),
		Backfill: NewDBBackfillStore(blockDB, stateDB), Genesis: chain.GenesisState(),
		Logger: log.NewNopLogger()})
	require.NoError(t, err)
	reactors = append(reactors, map[string]p2p.Reactor{"STATESYNC": fresh})
	p2ptest.Network(t, p2ptest.Config(0), reactors)

	state, err := fresh.Sync(backfillCtx(t))
	require.NoError(t, err)
	want := chain.State(height)
	require.Equal(t, want.LastBlockID, state.LastBlockID)
	require.Equal(t, srcHash, []byte(state.AppHash))
	require.Equal(t, want.NextValidators.Hash(), state.NextValidators.Hash())
	require.Equal(t, chain.Params(), state.ConsensusParams)
	require.Equal(t, srcHash, freshApp.AppHash())

	res, err := fresh.WaitBackfill(backfillCtx(t))
	require.NoError(t, err)
	require.NotNil(t, res, "Sync starts a backfill")
	require.NoError(t, res.Err)
	require.Equal(t, BackfillReachedInitialHeight, res.Stopped)
	require.Equal(t, height, res.Blocks)
	requireBackfilled(t, &bfNode{blockDB: blockDB, stateDB: stateDB}, chain, 1, height)
	for _, h := range []int64{1, 20, 41, height} {
		lb, err := fresh.loadLightBlock(h)
		require.NoError(t, err)
		require.NotNil(t, lb, "the node serves backfilled height %d", h)
	}
}
