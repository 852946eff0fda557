package statesync

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"
)

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
	require.Equal(t, verdictProgress, f.received(seen[0], 0, 10, now))
	require.Equal(t, verdictStrike, f.received(seen[0], 0, 10, now), "a duplicate is a strike")
	require.Equal(t, verdictStrike, f.received("c", 1, 10, now), "an unknown peer is struck")
	next := f.assign(now)
	require.Len(t, next, 1)
	require.Equal(t, uint32(4), next[0].index)
}

// TestFetchSchedulerDeadlinesAreAbsolute: nothing a peer sends moves the
// deadline of its other requests; only the request's own deadline counts.
func TestFetchSchedulerDeadlinesAreAbsolute(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(4, 2, time.Second)
	f.addPeer("slow")
	require.Len(t, f.assign(now), 2)
	f.addPeer("fast")
	require.Len(t, f.assign(now), 2)

	require.Equal(t, verdictProgress, f.received("fast", 2, 10, now.Add(900*time.Millisecond)))
	require.Equal(t, verdictStale, f.missing("fast", 3, now.Add(950*time.Millisecond)), "a first missing is no strike")
	expired := f.expire(now.Add(time.Second))
	require.Len(t, expired, 2)
	for _, r := range expired {
		require.Equal(t, p2p.ID("slow"), r.peer)
	}
	require.Equal(t, 1, f.peers["slow"].window.size, "a timeout halves the window")

	// The timed-out chunks are requested again; a late reply from the slow
	// peer still counts, because the chunk is still needed.
	again := f.assign(now.Add(time.Second))
	require.NotEmpty(t, again)
	require.Equal(t, verdictProgress, f.received("slow", 0, 10, now.Add(time.Second)))
}

func TestFetchSchedulerMissingAndStall(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(2, 4, time.Second)
	f.addPeer("a")
	require.Len(t, f.assign(now), 2)
	require.Equal(t, verdictStale, f.missing("a", 1, now))
	require.Equal(t, verdictProgress, f.received("a", 0, 10, now))
	require.Empty(t, f.assign(now), "a peer is not asked again for a chunk it lacks")
	require.True(t, f.stalled())
	f.addPeer("b")
	require.False(t, f.stalled())
	reqs := f.assign(now)
	require.Equal(t, []chunkRequest{{peer: "b", index: 1}}, reqs)
	require.Equal(t, verdictProgress, f.received("b", 1, 10, now))
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

// TestFetchSchedulerStrikes: duplicates, repeated "missing" and chunks
// nobody asked for are strikes, and past the allowance the peer is to be
// punished and is no longer used. The honest answers are not.
func TestFetchSchedulerStrikes(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(10, 4, time.Second)
	f.addPeer("h")
	reqs := f.assign(now)
	require.Len(t, reqs, 4)
	require.Equal(t, verdictStale, f.missing("h", 0, now), "the first missing answers the request")
	require.Equal(t, verdictStrike, f.missing("h", 0, now), "a repeated missing is a strike")
	require.Equal(t, verdictProgress, f.received("h", 1, 10, now))
	require.Equal(t, verdictStrike, f.received("h", 1, 10, now), "a duplicate is a strike")
	require.Equal(t, verdictStrike, f.received("h", 9, 10, now), "an index never asked is a strike")
	require.Equal(t, verdictPunish, f.missing("h", 8, now), "past the allowance")
	require.False(t, f.hasPeer("h"))
	require.Zero(t, f.inflight(), "its requests are withdrawn")
}

// TestFetchSchedulerHedgesTheNextChunk: a peer that withholds the chunk the
// applier needs next holds it only until it is overdue against the peer's
// own rate; another peer is asked too, the first answer wins, and the
// loser's late answer is not held against it.
func TestFetchSchedulerHedgesTheNextChunk(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(100, 2, 10*time.Second)
	f.addPeer("a")
	f.addPeer("b")
	// Measure both peers at 1 MB/s on 100 kB chunks (0.1 s each).
	for round := 0; round < 5; round++ {
		for _, r := range f.assign(now) {
			now = now.Add(100 * time.Millisecond)
			require.Equal(t, verdictProgress, f.received(r.peer, r.index, 100_000, now))
		}
	}
	reqs := f.assign(now)
	var holder p2p.ID
	for _, r := range reqs {
		if r.index == f.cursor {
			holder = r.peer
		}
	}
	require.NotEmpty(t, holder)
	req := f.peers[holder].inflight[f.cursor]
	require.Less(t, req.deadline.Sub(now), 10*time.Second, "a measured peer's deadline is below the ceiling")
	expect := f.hedgeAt(f.peers[holder], req)
	require.False(t, expect.After(req.deadline))

	// The other peer answers everything else; holder sits on the cursor.
	other := p2p.ID("a")
	if holder == "a" {
		other = "b"
	}
	cursor := f.cursor
	for index := range f.peers[other].inflight {
		require.Equal(t, verdictProgress, f.received(other, index, 100_000, now))
	}
	next, ok := f.nextDeadline()
	require.True(t, ok)
	require.False(t, next.After(expect), "the loop wakes up for the hedge")
	now = expect
	hedged := false
	for _, r := range f.assign(now) {
		if r.index == cursor {
			require.Equal(t, other, r.peer)
			hedged = true
		}
	}
	require.True(t, hedged, "the overdue next chunk is asked of another peer")
	require.True(t, now.Before(req.deadline), "before the holder's deadline")
	require.Equal(t, verdictProgress, f.received(other, cursor, 100_000, now))
	require.NotContains(t, f.peers[holder].inflight, cursor, "the loser's request is withdrawn")
	require.Equal(t, verdictStale, f.received(holder, cursor, 100_000, now), "its late answer is no strike")
	require.Zero(t, f.strikes[holder])
}

// TestFetchSchedulerSlowPeerGetsLaterChunks: once rates are measured, the
// lowest chunks go to the fast peers and a peer ten times slower is given a
// chunk needed only after the fast peers' queues.
func TestFetchSchedulerSlowPeerGetsLaterChunks(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(1000, 4, 10*time.Second)
	for _, id := range []p2p.ID{"f1", "f2", "f3", "slow"} {
		f.addPeer(id)
	}
	for round := 0; round < 8; round++ {
		queued := map[p2p.ID]int{}
		for _, r := range f.assign(now) {
			d := 10 * time.Millisecond
			if r.peer == "slow" {
				d = 100 * time.Millisecond
			}
			queued[r.peer]++ // each peer serves its queue one chunk after another
			at := now.Add(time.Duration(queued[r.peer]) * d)
			require.Equal(t, verdictProgress, f.received(r.peer, r.index, 10_000, at))
		}
		now = now.Add(time.Second)
	}
	reqs := f.assign(now)
	var slowMin uint32 = 1 << 31
	fastMax := uint32(0)
	for _, r := range reqs {
		if r.peer == "slow" {
			slowMin = min(slowMin, r.index)
		} else {
			fastMax = max(fastMax, r.index)
		}
	}
	require.Greater(t, slowMin, fastMax, "the slow peer works on chunks needed later")
	require.Greater(t, slowMin, f.cursor+12, "beyond the fast peers' windows")
}

// TestFetchSchedulerModel drives the scheduler with random events and checks
// its invariants: no index is in flight twice at one peer, at most two
// peers hold it, windows are respected (a hedge may add one), and every
// chunk is eventually fetched.
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
			f.assign(now)
			checkSchedInvariants(t, f, now)
			switch rng.Intn(4) {
			case 0: // time passes
				now = now.Add(time.Duration(rng.Intn(1500)) * time.Millisecond)
				f.expire(now)
				for _, p := range peers { // dropped peers advertise again
					f.addPeer(p)
				}
			default: // a random in-flight request is answered
				for idx, owners := range f.owners {
					for id := range owners {
						if f.received(id, idx, 100, now) == verdictProgress {
							got[idx] = true
						}
						break
					}
					break
				}
			}
		}
		require.True(t, f.complete(), "round %d: every chunk fetched", round)
		require.Len(t, got, int(n))
	}
}

// checkSchedInvariants checks the scheduler's bookkeeping and liveness
// right after assign(now): nothing in flight past its deadline or with a
// deadline past the ceiling, owners and in-flight maps agree, and the next
// chunk is not left with overdue holders while another peer could serve it.
func checkSchedInvariants(t testing.TB, f *fetchScheduler, now time.Time) {
	t.Helper()
	if msg := schedViolation(f, now); msg != "" {
		t.Fatal(msg)
	}
}

// schedViolation is checkSchedInvariants' check: the first invariant f
// breaks at now, or "". Plain comparisons, no testify: the fuzz target
// calls it after every step.
func schedViolation(f *fetchScheduler, now time.Time) string {
	count := 0
	for id, p := range f.peers {
		if len(p.inflight) > p.window.size+1+f.maxWindow {
			return fmt.Sprintf("peer %s holds %d requests, window %d (+1 hedge, +%d)", id, len(p.inflight),
				p.window.size, f.maxWindow)
		}
		for idx, req := range p.inflight {
			count++
			if _, owner := f.owners[idx][id]; !owner {
				return fmt.Sprintf("chunk %d in flight at %s, which is not among its owners", idx, id)
			}
			switch {
			case f.done[idx]:
				return fmt.Sprintf("chunk %d fetched but in flight at %s", idx, id)
			case !now.Before(req.deadline):
				return fmt.Sprintf("chunk %d held by %s past its deadline", idx, id)
			case req.deadline.Sub(req.sent) > f.ceiling:
				return fmt.Sprintf("chunk %d at %s: deadline %v after sending, beyond the ceiling %v", idx, id,
					req.deadline.Sub(req.sent), f.ceiling)
			case f.hedgeAt(p, req).After(req.deadline):
				return fmt.Sprintf("chunk %d at %s: hedge point after the deadline", idx, id)
			case p.asked[idx] != askInFlight:
				return fmt.Sprintf("chunk %d in flight at %s, asked state %d", idx, id, p.asked[idx])
			}
		}
	}
	total := 0
	for idx, owners := range f.owners {
		if len(owners) == 0 || len(owners) > 2 {
			return fmt.Sprintf("chunk %d has %d owners (1, or 2 with a hedge)", idx, len(owners))
		}
		for id := range owners {
			p := f.peers[id]
			if p == nil || p.inflight[idx] == nil {
				return fmt.Sprintf("chunk %d owned by %s, which does not have it in flight", idx, id)
			}
		}
		total += len(owners)
	}
	if count != total {
		return fmt.Sprintf("%d requests in flight at peers, %d owners", count, total)
	}

	// Liveness of the next chunk.
	holders := f.owners[f.cursor]
	if len(holders) != 1 {
		return ""
	}
	for id := range holders {
		if p := f.peers[id]; now.Before(f.hedgeAt(p, p.inflight[f.cursor])) {
			return ""
		}
	}
	for id, p := range f.peers {
		if _, held := holders[id]; held || len(p.inflight) > p.window.size {
			continue
		}
		if _, lacks := p.lacks[f.cursor]; lacks {
			continue
		}
		return fmt.Sprintf("chunk %d overdue at its only holder while %s could serve it", f.cursor, id)
	}
	return ""
}

func TestFetchSchedulerDropsSilentPeers(t *testing.T) {
	f := newFetchScheduler(10, 2, time.Second)
	f.addPeer("quiet")
	now := time.Now()
	for i := 0; i < maxSilentStrikes; i++ {
		require.NotEmpty(t, f.assign(now))
		now = now.Add(2 * time.Second)
		f.expire(now)
	}
	require.False(t, f.hasPeer("quiet"), "dropped after %d silent timeouts", maxSilentStrikes)
	require.Equal(t, []p2p.ID{"quiet"}, f.unhelpful())
	require.Equal(t, verdictStale, f.received("quiet", 0, 10, now), "a late answer of a dropped peer is no strike")
	f.forget("quiet")
	require.Empty(t, f.unhelpful())

	// A delivery between timeouts resets the count.
	g := newFetchScheduler(10, 2, time.Second)
	g.addPeer("slow")
	for i := 0; i < maxSilentStrikes; i++ {
		reqs := g.assign(now)
		require.NotEmpty(t, reqs)
		if i == 1 {
			require.Equal(t, verdictProgress, g.received("slow", reqs[0].index, 10, now))
		}
		now = now.Add(2 * time.Second)
		g.expire(now)
	}
	require.True(t, g.hasPeer("slow"))
}

// maxSchedOps is the most input bytes FuzzFetchScheduler reads: 256
// operations, enough to fill four peers' windows and exhaust their
// strikes many times over.
const maxSchedOps = 512

// FuzzFetchScheduler drives the scheduler with random deliveries, missings,
// duplicates, unsolicited chunks, silences and disconnects, on a virtual
// clock, and checks after every step that no chunk is held by one peer
// beyond its deadline (or the next chunk beyond its hedge point) while
// another peer could serve it; at the end an honest peer joins and the
// fetch must complete in a bounded number of steps.
func FuzzFetchScheduler(f *testing.F) {
	f.Add(uint8(10), uint8(2), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(uint8(50), uint8(4), []byte{1, 1, 1, 3, 3, 3, 0, 0, 0, 2, 2, 5, 6, 7, 0, 0})
	f.Add(uint8(3), uint8(1), []byte{4, 0, 4, 0, 4, 0, 6, 6, 6, 6})
	f.Fuzz(func(t *testing.T, n, window uint8, ops []byte) {
		if n == 0 {
			return
		}
		if len(ops) > maxSchedOps {
			ops = ops[:maxSchedOps]
		}
		ceiling := 2 * time.Second
		s := newFetchScheduler(uint32(n), int(window%8)+1, ceiling)
		peers := []p2p.ID{"p0", "p1", "p2", "p3"}
		for _, p := range peers {
			s.addPeer(p)
		}
		now := time.Unix(1_000_000, 0)
		pick := func(b byte) p2p.ID { return peers[int(b)%len(peers)] }
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%8, ops[i+1]
			switch op {
			case 0: // time passes (silence)
				now = now.Add(time.Duration(arg) * 20 * time.Millisecond)
				s.expire(now)
			case 1, 2: // a peer delivers one of its requests
				deliverOne(s, pick(arg), now, int(arg)*100)
			case 3: // a peer says missing for one of its requests
				if idx, ok := anyInflight(s, pick(arg)); ok {
					s.missing(pick(arg), idx, now)
				}
			case 4: // a duplicate or unsolicited chunk
				s.received(pick(arg), uint32(arg)%uint32(n), 100, now)
			case 5: // a repeated or unsolicited missing
				s.missing(pick(arg), uint32(arg)%uint32(n), now)
			case 6: // a disconnect
				s.removePeer(pick(arg))
			case 7: // a peer (re)advertises the snapshot
				s.addPeer(pick(arg))
			}
			s.expire(now)
			s.assign(now)
			if msg := schedViolation(s, now); msg != "" {
				t.Fatal(msg)
			}
		}
		// An honest peer joins; everyone else goes silent.
		s.addPeer("honest")
		for step := 0; step < 64*int(n)+64 && !s.complete(); step++ {
			s.expire(now)
			s.assign(now)
			if msg := schedViolation(s, now); msg != "" {
				t.Fatal(msg)
			}
			delivered := false
			for deliverOne(s, "honest", now, 1000) {
				delivered = true
			}
			if !delivered {
				now = now.Add(100 * time.Millisecond)
			}
		}
		if !s.complete() {
			t.Fatalf("fetch did not complete with an honest peer: cursor %d of %d", s.cursor, n)
		}
	})
}

// deliverOne makes peer deliver its lowest in-flight request of size bytes
// at now; false if it has none.
func deliverOne(s *fetchScheduler, peer p2p.ID, now time.Time, size int) bool {
	idx, ok := anyInflight(s, peer)
	if !ok {
		return false
	}
	s.received(peer, idx, size, now)
	return true
}

func anyInflight(s *fetchScheduler, peer p2p.ID) (uint32, bool) {
	p := s.peers[peer]
	if p == nil || len(p.inflight) == 0 {
		return 0, false
	}
	best := uint32(1<<32 - 1)
	for idx := range p.inflight {
		best = min(best, idx)
	}
	return best, true
}

// TestFetchSchedulerLateAnswers: an answer to a request of an earlier
// attempt (at another snapshot) is recognised once; a second is not.
func TestFetchSchedulerLateAnswers(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(4, 2, time.Second)
	f.addPeer("a")
	reqs := f.assign(now)
	require.Len(t, reqs, 2)
	require.True(t, f.late("a", reqs[0].index))
	require.False(t, f.late("a", reqs[0].index), "answered already")
	require.False(t, f.late("a", 3), "never asked")
	require.False(t, f.late("b", reqs[1].index), "unknown peer")
	require.Equal(t, 1, f.inflight())
}

// TestFetchSchedulerSlowStart: with a start window of 1, a new peer holds
// one chunk until it delivers, then its window grows by one per delivery.
func TestFetchSchedulerSlowStart(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(20, 4, time.Second)
	f.startWindow = 1
	f.addPeer("a")
	f.addPeer("b")
	reqs := f.assign(now)
	require.Len(t, reqs, 2, "one each")
	// a delivers at 10 kB/s, b at 1 kB/s: a is among the fastest and gets
	// its whole window; b grows by one.
	require.Equal(t, verdictProgress, f.received(reqs[0].peer, reqs[0].index, 10_000, now.Add(time.Second)))
	require.Equal(t, verdictProgress, f.received(reqs[1].peer, reqs[1].index, 1_000, now.Add(time.Second)))
	require.Equal(t, 4, f.peers[reqs[0].peer].window.size)
	require.Equal(t, 2, f.peers[reqs[1].peer].window.size)
}

// TestFetchSchedulerShift: time the restore held the answers back does
// not count against the peers' deadlines.
func TestFetchSchedulerShift(t *testing.T) {
	now := time.Now()
	f := newFetchScheduler(4, 2, time.Second)
	f.addPeer("a")
	require.Len(t, f.assign(now), 2)
	f.shift(5 * time.Second)
	require.Empty(t, f.expire(now.Add(2*time.Second)), "deadlines moved by the pause")
	require.Len(t, f.expire(now.Add(6*time.Second)), 2)
}
