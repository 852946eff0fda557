package statesync

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"
	"github.com/stretchr/testify/require"
)

var (
	qEpoch   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	errQTest = errors.New("test failure")
)

// qTime is the block time at height h in queue tests: one second apart.
func qTime(h int64) time.Time { return qEpoch.Add(time.Duration(h) * time.Second) }

func qBlock(h int64) *types.LightBlock {
	return &types.LightBlock{SignedHeader: &types.SignedHeader{Header: &types.Header{Height: h, Time: qTime(h)}}}
}

func qLimits() queueLimits {
	return queueLimits{window: 4, initWindow: 2, maxAttempts: 3, maxTimeouts: 2, maxAhead: 100, maxInflight: 1000}
}

// byPeer groups assignments.
func byPeer(as []fetchAssignment) map[p2p.ID][]int64 {
	out := make(map[p2p.ID][]int64)
	for _, a := range as {
		out[a.peer] = append(out[a.peer], a.height)
	}
	return out
}

// releaseAll verifies every block the queue releases, in order.
func releaseAll(q *blockQueue) []int64 {
	var out []int64
	for {
		b, ok := q.next()
		if !ok {
			return out
		}
		out = append(out, b.lb.Height)
		q.accept(b.lb.Time)
	}
}

func TestBlockQueueWindowsAndOrder(t *testing.T) {
	q := newBlockQueue(100, 1, 1, qTime(0), qLimits())
	q.addPeer("a")
	q.addPeer("b")
	as := q.assign()
	require.Len(t, as, 4, "each peer starts with its initial window")
	require.Equal(t, []int64{100, 99, 98, 97}, []int64{as[0].height, as[1].height, as[2].height, as[3].height},
		"highest heights first")
	require.Len(t, byPeer(as)["a"], 2)
	require.Len(t, byPeer(as)["b"], 2)
	require.Empty(t, q.assign(), "windows full")

	// Out-of-order arrivals are released in descending order only.
	got := byPeer(as)
	q.got("b", got["b"][0], qBlock(got["b"][0]), time.Millisecond)
	require.Empty(t, releaseAll(q), "%d is not at the cursor", got["b"][0])
	q.got("a", got["a"][0], qBlock(got["a"][0]), time.Millisecond)
	require.Equal(t, []int64{100, 99}, releaseAll(q))

	// Each answer grows the peer's window by one, up to the limit.
	as = q.assign()
	require.Len(t, byPeer(as)["a"], 2, "a: window 3, one in flight")
	require.Len(t, byPeer(as)["b"], 2)
	for _, a := range append(as, fetchAssignment{"a", got["a"][1]}, fetchAssignment{"b", got["b"][1]}) {
		q.got(a.peer, a.height, qBlock(a.height), time.Millisecond)
	}
	require.Equal(t, []int64{98, 97, 96, 95, 94, 93}, releaseAll(q))
	as = q.assign()
	require.Len(t, byPeer(as)["a"], 4, "window capped at 4")
	require.Len(t, byPeer(as)["b"], 4)

	// A timeout halves the window, once per event: requests sent before
	// the cut that time out too do not cut it again.
	sent := qEpoch
	q.timedOut("a", byPeer(as)["a"][0], sent, sent.Add(time.Second), errQTest)
	require.Equal(t, 2, q.peers["a"].window.size)
	q.timedOut("a", byPeer(as)["a"][1], sent, sent.Add(time.Second), errQTest)
	require.Equal(t, 2, q.peers["a"].window.size)
	require.Equal(t, 1, q.peers["a"].timeouts)
	q.timedOut("a", byPeer(as)["a"][2], sent.Add(2*time.Second), sent.Add(3*time.Second), errQTest)
	require.Equal(t, 1, q.peers["a"].window.size)
	require.Equal(t, 2, q.peers["a"].timeouts)
}

func TestBlockQueueLackingPeerNotAskedLower(t *testing.T) {
	q := newBlockQueue(50, 1, 1, qTime(0), qLimits())
	q.addPeer("short")
	as := q.assign()
	require.Equal(t, []int64{50, 49}, []int64{as[0].height, as[1].height})
	q.lacked("short", 49, 0)
	q.got("short", 50, qBlock(50), 0)
	require.Equal(t, []int64{50}, releaseAll(q))
	require.Empty(t, q.assign(), "the peer lacks 49 and everything below")
	h, stalled := q.stalledAt()
	require.True(t, stalled)
	require.Equal(t, int64(49), h)

	q.addPeer("long")
	as = q.assign()
	require.Equal(t, int64(49), as[0].height, "the lacked height goes to another peer first")
	for _, a := range as {
		require.Equal(t, p2p.ID("long"), a.peer)
	}
	_, stalled = q.stalledAt()
	require.False(t, stalled)
}

func TestBlockQueueBadBlockRefetchedElsewhere(t *testing.T) {
	q := newBlockQueue(10, 1, 1, qTime(0), qLimits())
	q.addPeer("liar")
	q.addPeer("honest")
	as := q.assign()
	for _, a := range as {
		q.got(a.peer, a.height, qBlock(a.height), 0)
	}
	b, ok := q.next()
	require.True(t, ok)
	peer, h := q.reject(errQTest)
	require.Equal(t, b.peer, peer)
	require.Equal(t, int64(10), h)
	require.Equal(t, p2p.ID("liar"), peer, "peers are served in the order they were added")
	require.True(t, q.peers["liar"].benched)
	as = q.assign()
	require.Equal(t, fetchAssignment{"honest", 10}, as[0])
	for _, a := range as {
		require.NotEqual(t, p2p.ID("liar"), a.peer)
	}
}

func TestBlockQueueRetriesBounded(t *testing.T) {
	q := newBlockQueue(10, 1, 1, qTime(0), qLimits())
	q.addPeer("a")
	q.addPeer("b")
	q.addPeer("c")
	failedBy := map[p2p.ID]bool{}
	for i := 0; i < 100 && !q.finished(); i++ {
		for _, a := range q.assign() {
			if a.height == 10 { // height 10 never arrives
				failedBy[a.peer] = true
				now := qEpoch.Add(time.Duration(i) * time.Second)
				q.timedOut(a.peer, a.height, now, now, errQTest)
			} else {
				q.got(a.peer, a.height, qBlock(a.height), 0)
			}
		}
		releaseAll(q)
	}
	require.Len(t, failedBy, 3, "each retry went to another peer")
	require.True(t, q.finished())
	require.Equal(t, BackfillRetriesExhausted, q.stopped)
	require.ErrorIs(t, q.err, errQTest)
	require.Empty(t, q.assign())
}

func TestBlockQueueSilentPeerBenched(t *testing.T) {
	q := newBlockQueue(100, 1, 1, qTime(0), qLimits())
	q.addPeer("silent")
	q.addPeer("good")
	for i := 0; i < 2; i++ {
		sent := qEpoch.Add(time.Duration(2*i) * time.Second)
		for _, a := range byPeer(q.assign())["silent"] {
			q.timedOut("silent", a, sent, sent.Add(time.Second), errQTest)
		}
	}
	require.True(t, q.peers["silent"].benched)
	require.Empty(t, byPeer(q.assign())["silent"])
	require.Equal(t, 1, q.usablePeers())
}

func TestBlockQueueStopsByHeightAndTime(t *testing.T) {
	// Height bound 90, time bound: strictly before the time of height 80.
	q := newBlockQueue(100, 1, 90, qTime(80), queueLimits{window: 64, maxAhead: 1000, maxInflight: 1000})
	q.addPeer("a")
	for !q.finished() {
		as := q.assign()
		for _, a := range as {
			q.got(a.peer, a.height, qBlock(a.height), 0)
		}
		releaseAll(q)
	}
	require.Equal(t, BackfillComplete, q.stopped)
	require.Equal(t, int64(79), q.lowestVerified(), "height 90 is not old enough; 79 is the first block before the time bound")

	// Height bound only (time bound already met at the top).
	q = newBlockQueue(100, 1, 90, qTime(1000), queueLimits{window: 64, maxAhead: 1000, maxInflight: 1000})
	q.addPeer("a")
	for !q.finished() {
		for _, a := range q.assign() {
			q.got(a.peer, a.height, qBlock(a.height), 0)
		}
		releaseAll(q)
	}
	require.Equal(t, int64(90), q.lowestVerified())

	// Never below the floor.
	q = newBlockQueue(100, 95, 1, qTime(0), queueLimits{window: 64, maxAhead: 1000, maxInflight: 1000})
	q.addPeer("a")
	as := q.assign()
	require.Len(t, as, 6)
	for _, a := range as {
		require.GreaterOrEqual(t, a.height, int64(95))
		q.got(a.peer, a.height, qBlock(a.height), 0)
	}
	releaseAll(q)
	require.Equal(t, BackfillReachedInitialHeight, q.stopped)
	require.Equal(t, int64(95), q.lowestVerified())
}

func TestBlockQueueFetchesWithinMaxAhead(t *testing.T) {
	q := newBlockQueue(1000, 1, 1, qTime(0), queueLimits{window: 64, maxAhead: 10, maxInflight: 1000})
	q.addPeer("a")
	as := q.assign()
	require.Len(t, as, 10)
	require.Equal(t, int64(991), as[9].height)
}

// TestBlockQueueModel drives the queue with random events from random
// peers and checks its invariants against a simple model: blocks are
// released exactly once each, in strictly descending contiguous order;
// no height is in flight twice; windows are respected; and the queue ends
// at the bound (or fails, when retries run out).
func TestBlockQueueModel(t *testing.T) {
	completed := 0
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed))
		top := int64(20 + rng.IntN(200))
		floor := int64(1 + rng.IntN(10))
		stopHeight := floor + int64(rng.IntN(int(top-floor)))
		lim := queueLimits{
			window: 1 + rng.IntN(8), initWindow: 1 + rng.IntN(4), maxAttempts: 5 + rng.IntN(20),
			maxTimeouts: 2 + rng.IntN(4), maxAhead: 1 + rng.IntN(50), maxInflight: 1 + rng.IntN(64),
		}
		q := newBlockQueue(top, floor, stopHeight, qTime(stopHeight+1), lim)
		peers := []p2p.ID{"p0", "p1", "p2", "p3"}
		lacks := map[p2p.ID]int64{}
		for _, id := range peers {
			q.addPeer(id)
			if rng.IntN(3) == 0 {
				lacks[id] = floor + int64(rng.IntN(int(top-floor)))
			}
		}
		lacks["p0"] = 0 // one peer has everything: the queue must finish
		inflight := map[int64]p2p.ID{}
		var released []int64
		for step := 0; !q.finished() && step < 100000; step++ {
			for _, a := range q.assign() {
				_, dup := inflight[a.height]
				require.False(t, dup, "seed %d: height %d handed out twice", seed, a.height)
				require.LessOrEqual(t, a.height, top)
				require.GreaterOrEqual(t, a.height, floor)
				inflight[a.height] = a.peer
			}
			for id, p := range q.peers {
				require.LessOrEqual(t, p.inflight, lim.window, "seed %d: %s over its window", seed, id)
			}
			require.LessOrEqual(t, len(inflight), lim.maxInflight)
			if len(inflight) == 0 {
				break // stalled: checked below (p0 has everything, so it must not happen)
			}
			// Answer a random in-flight request.
			hs := make([]int64, 0, len(inflight))
			for h := range inflight {
				hs = append(hs, h)
			}
			slices.Sort(hs)
			h := hs[rng.IntN(len(hs))]
			peer := inflight[h]
			delete(inflight, h)
			switch {
			case lacks[peer] != 0 && h <= lacks[peer]:
				q.lacked(peer, h, time.Millisecond)
			case rng.IntN(20) == 0 && peer != "p0":
				now := qEpoch.Add(time.Duration(step) * time.Second)
				q.timedOut(peer, h, now.Add(-time.Duration(rng.IntN(3))*time.Second), now, errQTest)
			case rng.IntN(20) == 0 && peer != "p0":
				q.gone(peer, h)
			default:
				q.got(peer, h, qBlock(h), time.Millisecond)
			}
			for {
				b, ok := q.next()
				if !ok {
					break
				}
				if b.peer != "p0" && rng.IntN(30) == 0 {
					q.reject(errQTest)
					continue
				}
				released = append(released, b.lb.Height)
				q.accept(b.lb.Time)
			}
		}
		for i, h := range released {
			require.Equal(t, top-int64(i), h, "seed %d: release order", seed)
		}
		if q.err != nil {
			continue // retries ran out: allowed, reported
		}
		require.True(t, q.finished(), "seed %d: not finished", seed)
		require.Equal(t, stopHeight, q.lowestVerified(), "seed %d", seed)
		completed++
	}
	require.Greater(t, completed, 150, "most runs must complete")
}

// TestBlockQueueByteBudget: peers sending 10 MB blocks cannot make the
// queue hold more unverified bytes than its budget (counting requests in
// flight at the largest size seen), even when the peer at the cursor is
// slow and the others race ahead; the cursor height is always fetched.
func TestBlockQueueByteBudget(t *testing.T) {
	const block = 10 << 20
	lim := qLimits()
	lim.window, lim.initWindow, lim.maxAhead = 64, 64, 2048
	lim.maxBytes = 8 * block
	q := newBlockQueue(1000, 1, 1, qTime(0), lim)
	for _, id := range []p2p.ID{"a", "b", "c", "d"} {
		q.addPeer(id)
	}
	var slow []fetchAssignment // the cursor's requests, answered last
	for round := 0; round < 500 && !q.finished(); round++ {
		as := q.assign()
		for _, a := range as {
			if a.height == q.verifyAt && round%3 != 2 {
				slow = append(slow, a)
				continue
			}
			q.gotSized(a.peer, a.height, qBlock(a.height), block, time.Millisecond)
		}
		require.LessOrEqual(t, q.fetchedBytes, lim.maxBytes+block, "round %d: %d bytes held", round, q.fetchedBytes)
		if round > 0 {
			inflight := int64(len(q.inflight)) * block
			require.LessOrEqual(t, inflight, lim.maxBytes+block, "round %d: %d bytes expected", round, inflight)
		}
		if round%3 == 2 {
			for _, a := range slow {
				q.gotSized(a.peer, a.height, qBlock(a.height), block, time.Millisecond)
			}
			slow = nil
			releaseAll(q)
		}
	}
	require.True(t, q.finished(), "the budget never stalls the queue")
	require.Equal(t, BackfillReachedInitialHeight, q.stopped)
}
