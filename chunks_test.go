package statesync

import (
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"
)

func TestChunkQueueSpool(t *testing.T) {
	dir := t.TempDir()
	q, err := newChunkQueue(dir, &snapshot{Height: 5, Format: 1, Chunks: 3})
	require.NoError(t, err)

	added, err := q.put(1, []byte("one"), "a")
	require.NoError(t, err)
	require.True(t, added)
	added, err = q.put(1, []byte("again"), "b")
	require.NoError(t, err)
	require.False(t, added, "a chunk on disk is not overwritten")
	_, err = q.put(3, []byte("x"), "a")
	require.Error(t, err)

	data, err := q.load(1)
	require.NoError(t, err)
	require.Equal(t, []byte("one"), data)
	require.Equal(t, p2p.ID("a"), q.senderOf(1))
	require.EqualValues(t, 1, q.count)
	require.EqualValues(t, 3, q.bytes)

	q.put(0, []byte("zero"), "b")
	q.put(2, []byte("two"), "a")
	discarded, err := q.discardSender("a", 1)
	require.NoError(t, err)
	require.Equal(t, []uint32{1, 2}, discarded)
	require.True(t, q.has(0))
	require.False(t, q.has(1))
	require.EqualValues(t, 4, q.bytes)

	require.NoError(t, q.close())
	_, err = os.Stat(q.dir)
	require.True(t, os.IsNotExist(err))
}

func TestFetchSchedulerWindowsAndOrder(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(10, 2, time.Second)
	f.addPeer("a")
	f.addPeer("b")
	reqs := f.assign(now)
	require.Len(t, reqs, 4, "each peer gets its own window")
	seen := map[uint32]p2p.ID{}
	perPeer := map[p2p.ID]int{}
	for _, r := range reqs {
		_, dup := seen[r.index]
		require.False(t, dup, "an index is requested from one peer at a time")
		seen[r.index] = r.peer
		perPeer[r.peer]++
	}
	require.Equal(t, map[p2p.ID]int{"a": 2, "b": 2}, perPeer)
	for i := uint32(0); i < 4; i++ {
		require.Contains(t, seen, i, "lowest indexes first")
	}
	require.Empty(t, f.assign(now), "windows are full")

	// A delivery frees a slot and is matched to its request.
	require.True(t, f.received(seen[0], 0, now))
	require.False(t, f.received(seen[0], 0, now), "a duplicate is not solicited")
	require.False(t, f.received("c", 1, now), "an unknown peer is not solicited")
	next := f.assign(now)
	require.Len(t, next, 1)
	require.Equal(t, uint32(4), next[0].index)
}

func TestFetchSchedulerTimeoutsMoveWork(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(4, 2, time.Second)
	f.addPeer("slow")
	reqs := f.assign(now)
	require.Len(t, reqs, 2)
	f.addPeer("fast")
	require.Len(t, f.assign(now), 2)

	// Progress from "fast" pushes back only its own deadlines.
	f.received("fast", 2, now.Add(900*time.Millisecond))
	expired := f.expire(now.Add(time.Second))
	require.Len(t, expired, 2)
	for _, r := range expired {
		require.Equal(t, p2p.ID("slow"), r.peer)
	}
	require.Equal(t, 1, f.peers["slow"].window, "a timeout halves the window")

	// The timed-out chunks are requested again, and a late reply from the
	// slow peer is still accepted.
	again := f.assign(now.Add(time.Second))
	require.NotEmpty(t, again)
	require.True(t, f.received("slow", 0, now.Add(time.Second)))
}

func TestFetchSchedulerMissingAndStall(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(2, 4, time.Second)
	f.addPeer("a")
	require.Len(t, f.assign(now), 2)
	require.True(t, f.missing("a", 1, now))
	require.True(t, f.received("a", 0, now))
	require.Empty(t, f.assign(now), "a peer is not asked again for a chunk it lacks")
	require.True(t, f.stalled())
	f.addPeer("b")
	require.False(t, f.stalled())
	reqs := f.assign(now)
	require.Equal(t, []chunkRequest{{peer: "b", index: 1}}, reqs)
	require.True(t, f.received("b", 1, now))
	require.True(t, f.complete())

	f.refetch(0)
	require.False(t, f.complete())
	require.Equal(t, uint32(0), f.cursor)
}

func TestFetchSchedulerRemovePeerFreesWork(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(3, 3, time.Second)
	f.addPeer("a")
	require.Len(t, f.assign(now), 3)
	f.removePeer("a")
	require.Zero(t, f.inflight())
	f.addPeer("b")
	require.Len(t, f.assign(now), 3)
}

// TestFetchSchedulerModel drives the scheduler with random events and checks
// its invariants against a naive model: no index is in flight twice, windows
// are respected, and every chunk is eventually fetched.
func TestFetchSchedulerModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		n := uint32(1 + rng.Intn(40))
		f := newFetchScheduler(n, 1+rng.Intn(4), time.Second)
		peers := []p2p.ID{"a", "b", "c"}
		for _, p := range peers {
			f.addPeer(p)
		}
		now := time.Now()
		got := make(map[uint32]bool)
		for step := 0; step < 10000 && !f.complete(); step++ {
			before := map[p2p.ID]int{}
			for id, p := range f.peers {
				before[id] = len(p.inflight)
			}
			f.assign(now)
			// invariants: assign never fills a window beyond its size (a
			// halved window drains before it is filled again)
			owners := map[uint32]p2p.ID{}
			for id, p := range f.peers {
				require.LessOrEqual(t, len(p.inflight), max(p.window, before[id]))
				for idx := range p.inflight {
					_, dup := owners[idx]
					require.False(t, dup)
					owners[idx] = id
					require.False(t, f.done[idx])
				}
			}
			require.Equal(t, len(owners), f.inflight())
			switch rng.Intn(4) {
			case 0: // time passes
				now = now.Add(time.Duration(rng.Intn(1500)) * time.Millisecond)
				f.expire(now)
				// a peer dropped for silence comes back when it advertises
				// the snapshot again
				for _, p := range peers {
					f.addPeer(p)
				}
			default: // a random in-flight request is answered
				for idx, id := range owners {
					if f.received(id, idx, now) {
						got[idx] = true
					}
					break
				}
			}
		}
		require.True(t, f.complete(), "round %d: every chunk fetched", round)
		require.Len(t, got, int(n))
	}
}

// TestFetchSchedulerDropsSilentPeers: maxSilentStrikes timeouts in a row
// with no answer drop a peer and name it in unhelpful; an answer between
// timeouts resets the count.
func TestFetchSchedulerDropsSilentPeers(t *testing.T) {
	f := newFetchScheduler(10, 2, time.Second)
	f.addPeer("quiet")
	f.addPeer("slow")
	now := time.Now()
	for i := 0; i < maxSilentStrikes; i++ {
		reqs := f.assign(now)
		require.NotEmpty(t, reqs)
		if i == 1 { // slow answers once between its timeouts
			for _, r := range reqs {
				if r.peer == "slow" {
					require.True(t, f.received("slow", r.index, now))
					break
				}
			}
		}
		now = now.Add(2 * time.Second)
		f.expire(now)
	}
	require.False(t, f.hasPeer("quiet"), "dropped after %d silent timeouts", maxSilentStrikes)
	require.True(t, f.hasPeer("slow"))
	require.Equal(t, []p2p.ID{"quiet"}, f.unhelpful())
	f.forget("quiet")
	require.Empty(t, f.unhelpful())
}
