package statesync

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
)

// recordingStores wrap the fresh node's stores and record Sync's writes
// in order; failSeen makes SaveSeenCommit fail.
type recordingStores struct {
	mtx      sync.Mutex
	writes   []string
	failSeen bool
}

func (r *recordingStores) record(w string) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	r.writes = append(r.writes, w)
}

func (r *recordingStores) list() []string {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return append([]string(nil), r.writes...)
}

type recStateStore struct {
	StateStore
	rec *recordingStores
}

func (s recStateStore) Bootstrap(state sm.State) error {
	s.rec.record("bootstrap")
	return s.StateStore.Bootstrap(state)
}

func (s recStateStore) SetOfflineStateSyncHeight(h int64) error {
	s.rec.record("offline-height")
	return s.StateStore.SetOfflineStateSyncHeight(h)
}

type recBlockStore struct {
	BlockStore
	rec *recordingStores
}

func (s recBlockStore) SaveSeenCommit(h int64, c *types.Commit) error {
	s.rec.record("seen-commit")
	if s.rec.failSeen {
		return errors.New("disk full")
	}
	return s.BlockStore.SaveSeenCommit(h, c)
}

// TestSyncWritesStoresInCrashSafeOrder: Sync writes the seen commit, then
// the offline state sync height, then bootstraps the state store last, so
// that a crash at any point leaves either a node that state-syncs again or
// one that boots and block-syncs; and when a write before Bootstrap fails,
// the state store is left unbootstrapped (the node is not "synced").
func TestSyncWritesStoresInCrashSafeOrder(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := "ok"
		if fail {
			name = "seen_commit_fails"
		}
		t.Run(name, func(t *testing.T) {
			rec := &recordingStores{failSeen: fail}
			var ss sm.Store
			tn := newMemNet(t, netOpts{cfg: func(c *Config) { c.Backfill = false }, freshDeps: func(d *Deps) {
				ss = d.StateStore.(sm.Store)
				d.StateStore = recStateStore{StateStore: d.StateStore, rec: rec}
				d.BlockStore = recBlockStore{BlockStore: d.BlockStore, rec: rec}
			}})
			res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
			state, err := ss.Load()
			require.NoError(t, err)
			if fail {
				require.ErrorContains(t, res.err, "disk full")
				require.Equal(t, []string{"seen-commit"}, rec.list())
				require.Zero(t, state.LastBlockHeight, "a failed Sync must not leave a bootstrapped state")
				return
			}
			require.NoError(t, res.err)
			require.Equal(t, []string{"seen-commit", "offline-height", "bootstrap"}, rec.list())
			require.Equal(t, tn.height, state.LastBlockHeight)
			h, err := ss.GetOfflineStateSyncHeight()
			require.NoError(t, err)
			require.Equal(t, tn.height, h)
		})
	}
}

type checkpointingStore interface {
	BackfillStore
	BackfillCheckpointer
}

// gatedBackfillStore holds every SaveSignedHeader until released.
type gatedBackfillStore struct {
	checkpointingStore
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (g *gatedBackfillStore) SaveSignedHeader(id types.BlockID, sh *types.SignedHeader) error {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return g.checkpointingStore.SaveSignedHeader(id, sh)
}

// TestSyncReturnsBeforeBackfill: Sync returns the state once the stores
// are bootstrapped, while the backfill it started is still running (held
// inside the backfill store here); the backfill's result comes later
// through WaitBackfill and LastBackfill.
func TestSyncReturnsBeforeBackfill(t *testing.T) {
	gate := &gatedBackfillStore{entered: make(chan struct{}), release: make(chan struct{})}
	blockDB, stateDB := dbm.NewMemDB(), dbm.NewMemDB()
	tn := newMemNet(t, netOpts{freshDeps: func(d *Deps) {
		gate.checkpointingStore = NewDBBackfillStore(blockDB, stateDB).(checkpointingStore)
		d.Backfill = gate
	}})
	t.Cleanup(func() {
		select {
		case <-gate.release:
		default:
			close(gate.release)
		}
	})
	r := tn.fresh.reactor
	res := waitSync(t, startSync(syncCtx(t), r), 30*time.Second)
	require.NoError(t, res.err)
	require.Equal(t, tn.height, res.state.LastBlockHeight)

	select {
	case <-gate.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the backfill did not start")
	}
	require.Nil(t, r.LastBackfill(), "the backfill is still running")
	require.True(t, r.metrics.Backfilling())
	cp, ok, err := gate.LoadBackfillCheckpoint()
	require.NoError(t, err)
	require.True(t, ok, "Sync saved the backfill checkpoint before Bootstrap")
	require.Equal(t, BackfillCheckpoint{Top: tn.height, Lowest: tn.height + 1, Floor: 1, StopHeight: 1,
		StopTime: cp.StopTime}, cp)

	close(gate.release)
	bf, err := r.WaitBackfill(syncCtx(t))
	require.NoError(t, err)
	require.NotNil(t, bf)
	require.NoError(t, bf.Err)
	require.Equal(t, int64(1), bf.To)
	require.False(t, r.metrics.Backfilling())
	cp, _, err = gate.LoadBackfillCheckpoint()
	require.NoError(t, err)
	require.True(t, cp.Done)
	require.Equal(t, int64(1), cp.Lowest)
}

// TestBackfillResumesAfterRestart: a backfill stopped half way (the
// Reactor stops) leaves a checkpoint; a new Reactor over the same
// databases (a restarted node) continues from the lowest stored height
// instead of starting again, and ends with every height stored.
func TestBackfillResumesAfterRestart(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 400, ValSetChanges: map[int64]int{100: 5, 250: 3}})
	const top = 390
	first := newBackfillNode(t, chain, nil)
	first.net.add("a", &fakePeer{chain: chain, delay: 5 * time.Millisecond})
	first.net.add("b", &fakePeer{chain: chain, delay: 5 * time.Millisecond})
	require.True(t, first.r.StartBackfill(chain.State(top)))
	waitFor(t, "some progress", func() bool { return first.r.metrics.BackFilledBlocks() >= 40 })
	require.NoError(t, first.r.Stop())
	res1, err := first.r.WaitBackfill(context.Background())
	require.NoError(t, err)
	require.Equal(t, BackfillCancelled, res1.Stopped)
	require.ErrorIs(t, res1.Err, ErrStopped)
	require.Greater(t, res1.To, int64(1))
	requireBackfilled(t, first, chain, res1.To, top)

	// Restart: the same databases, a new Reactor, the node's state moved on.
	second := newBackfillNodeOn(t, chain, nil, first.blockDB, first.stateDB)
	second.net.add("a", &fakePeer{chain: chain})
	second.net.add("b", &fakePeer{chain: chain})
	started, err := second.r.ResumeBackfill(chain.State(top))
	require.NoError(t, err)
	require.True(t, started)
	res2, err := second.r.WaitBackfill(backfillCtx(t))
	require.NoError(t, err)
	require.NoError(t, res2.Err)
	require.Equal(t, res1.To-1, res2.From, "resumed below the lowest stored height")
	require.Equal(t, int64(1), res2.To)
	requireBackfilled(t, second, chain, 1, top)

	// Finished: nothing to resume on the next restart.
	third := newBackfillNodeOn(t, chain, nil, first.blockDB, first.stateDB)
	started, err = third.r.ResumeBackfill(chain.State(top))
	require.NoError(t, err)
	require.False(t, started)
}

// levelLogger records the level of every log line.
type levelLogger struct {
	mtx   *sync.Mutex
	lines *[]string
}

func newLevelLogger() levelLogger { return levelLogger{mtx: &sync.Mutex{}, lines: new([]string)} }

func (l levelLogger) add(level, msg string) {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	*l.lines = append(*l.lines, level+" "+msg)
}
func (l levelLogger) Debug(string, ...any)       {}
func (l levelLogger) Info(msg string, _ ...any)  { l.add("I", msg) }
func (l levelLogger) Error(msg string, _ ...any) { l.add("E", msg) }
func (l levelLogger) Warn(msg string, _ ...any)  { l.add("W", msg) }
func (l levelLogger) With(...any) log.Logger     { return l }
func (l levelLogger) list() []string {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return append([]string(nil), *l.lines...)
}

// TestBackfillWithoutSourceSaysSoOnceAtInfo: with no peer serving light
// blocks and no RPC server, the background backfill says so once, at info
// level (nothing is wrong with the node), ends with BackfillNoPeers, and
// leaves its checkpoint unfinished for a restart.
func TestBackfillWithoutSourceSaysSoOnceAtInfo(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 40})
	logger := newLevelLogger()
	n := newBackfillNode(t, chain, func(c *Config) { c.RPCServers = nil })
	n.r.logger = logger
	require.True(t, n.r.StartBackfill(chain.State(30)))
	res, err := n.r.WaitBackfill(backfillCtx(t))
	require.NoError(t, err)
	require.Equal(t, BackfillNoPeers, res.Stopped)
	require.ErrorIs(t, res.Err, ErrNoPeers)
	said := 0
	for _, l := range logger.list() {
		require.False(t, strings.HasPrefix(l, "E "), "error-level line: %s", l)
		if strings.Contains(l, "no source") {
			said++
		}
	}
	require.Equal(t, 1, said, "%q", logger.list())
	cp, ok, err := n.r.checkpointer().LoadBackfillCheckpoint()
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, cp.Done)
}

// TestBackfillFromUnreachableRPCServersGivesUp: with no peer serving light
// blocks, backfill asks the configured RPC servers; servers that refuse
// connections are backed off like timing-out peers and given up, and the
// backfill ends with BackfillNoPeers instead of spinning.
func TestBackfillFromUnreachableRPCServersGivesUp(t *testing.T) {
	chain := testChain(t, chaingen.Options{Height: 40})
	var servers []string
	for range 2 {
		servers = append(servers, fmt.Sprintf("http://127.0.0.1:%d", freePort(t))) // nothing listens
	}
	n := newBackfillNode(t, chain, func(c *Config) { c.RPCServers = servers })
	require.True(t, n.r.StartBackfill(chain.State(30)))
	res, err := n.r.WaitBackfill(backfillCtx(t))
	require.NoError(t, err)
	require.Equal(t, BackfillNoPeers, res.Stopped, "%+v", res)
	require.Zero(t, res.Blocks)
}
