package statesync

import (
	"fmt"
	"testing"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"

	ssproto "github.com/statesync/statesync/proto"
)

func adv(height uint64, format uint32) *ssproto.SnapshotsResponse {
	return &ssproto.SnapshotsResponse{Height: height, Format: format, Chunks: 3, Hash: []byte{byte(height), byte(format)}}
}

func TestSnapshotPoolRanking(t *testing.T) {
	p := newSnapshotPool()
	now := time.Now()
	// h=10 by one peer, h=8 by two peers: more peers wins, then height.
	_, isNew := p.add("a", adv(10, 1))
	require.True(t, isNew)
	p.add("a", adv(8, 1))
	s8, isNew := p.add("b", adv(8, 1))
	require.False(t, isNew)
	p.add("b", adv(8, 2))
	p.add("c", adv(8, 2))

	ranked := p.ranked(now)
	require.Len(t, ranked, 3)
	require.Equal(t, uint64(8), ranked[0].Height)
	require.Equal(t, uint32(2), ranked[0].Format) // two peers each, format 2 > 1
	require.Equal(t, s8, ranked[1])
	require.Equal(t, uint64(10), ranked[2].Height)
	require.Equal(t, []p2p.ID{"a", "b"}, p.peersOf(s8))
}

func TestSnapshotPoolRejections(t *testing.T) {
	p := newSnapshotPool()
	now := time.Now()
	s1, _ := p.add("a", adv(10, 1))
	s2, _ := p.add("a", adv(9, 2))
	s3, _ := p.add("b", adv(8, 1))

	p.reject(s1, ErrRejectSnapshot)
	require.Equal(t, s2, p.best(now))
	p.rejectFormat(2)
	require.Equal(t, s3, p.best(now))
	p.rejectPeer("b")
	require.Nil(t, p.best(now))
	require.True(t, p.isRejectedPeer("b"))
	// A rejected peer's later advertisements are ignored.
	got, _ := p.add("b", adv(20, 1))
	require.Nil(t, got)
	require.Equal(t, 1, p.rejectedCount())
}

func TestSnapshotPoolDeferAndRemovePeer(t *testing.T) {
	p := newSnapshotPool()
	now := time.Now()
	s, _ := p.add("a", adv(10, 1))
	p.deferUntil(s, now.Add(time.Minute))
	require.Nil(t, p.best(now))
	until, ok := p.nextDeferred()
	require.True(t, ok)
	require.Equal(t, now.Add(time.Minute), until)
	require.Equal(t, s, p.best(now.Add(time.Minute)))

	p.removePeer("a")
	require.Nil(t, p.best(now.Add(time.Hour)), "a snapshot nobody advertises is not usable")
	_, ok = p.nextDeferred()
	require.False(t, ok)
}

func TestSnapshotPoolCapsPerPeer(t *testing.T) {
	p := newSnapshotPool()
	for h := uint64(1); h <= maxSnapshotsPerPeer; h++ {
		s, _ := p.add("a", adv(h, 1))
		require.NotNil(t, s)
	}
	// A lower one than all it holds is ignored; a higher one replaces the
	// lowest (an honest peer that pruned its oldest snapshot).
	s, _ := p.add("a", adv(0, 1))
	require.Nil(t, s)
	s, _ = p.add("a", adv(1000, 1))
	require.NotNil(t, s)
	n, _ := p.held()
	require.Equal(t, maxSnapshotsPerPeer, n, "a peer cannot make us hold more than maxSnapshotsPerPeer snapshots")
	require.Equal(t, uint64(2), p.lowestOf("a").Height)
}

// TestSnapshotPoolBytesFollowConnectedPeers: a churning peer that
// advertises big snapshots and leaves, over and over, leaves nothing
// behind; a rejected snapshot leaves only its key.
func TestSnapshotPoolBytesFollowConnectedPeers(t *testing.T) {
	p := newSnapshotPool()
	big := func(h uint64) *ssproto.SnapshotsResponse {
		m := adv(h, 1)
		m.Metadata = make([]byte, 64<<10)
		m.Metadata[0] = byte(h)
		return m
	}
	for cycle := range 300 {
		peer := p2p.ID(fmt.Sprintf("churner%d", cycle))
		for h := range uint64(maxSnapshotsPerPeer) {
			p.add(peer, big(uint64(cycle)*100+h))
		}
		n, bytes := p.held()
		require.Equal(t, maxSnapshotsPerPeer, n)
		require.LessOrEqual(t, bytes, int64(maxPeerSnapshotBytes))
		p.removePeer(peer)
		n, bytes = p.held()
		require.Zero(t, n, "a snapshot is deleted when its last advertiser leaves")
		require.Zero(t, bytes)
	}
	require.Equal(t, 300*maxSnapshotsPerPeer, p.size(), "size counts every snapshot ever seen")
	require.Empty(t, p.byPeer)
	require.Empty(t, p.peerBytes)

	s, _ := p.add("a", big(1))
	p.add("b", big(1))
	p.reject(s, ErrRejectSnapshot)
	n, bytes := p.held()
	require.Zero(t, n)
	require.Zero(t, bytes)
	require.Empty(t, p.byPeer, "nobody is recorded as advertising a rejected snapshot")
	got, _ := p.add("c", big(1))
	require.Nil(t, got, "a rejected snapshot is not pooled again")
}

// TestSnapshotPoolTotalBudget: many peers together cannot make the pool
// hold more than maxPoolSnapshotBytes; known snapshots still gain
// advertisers.
func TestSnapshotPoolTotalBudget(t *testing.T) {
	p := newSnapshotPool()
	shared, _ := p.add("honest", adv(5, 1))
	for i := range 2 * maxPoolSnapshotBytes / maxPeerSnapshotBytes {
		peer := p2p.ID(fmt.Sprintf("sybil%d", i))
		for h := range uint64(maxSnapshotsPerPeer) {
			m := adv(uint64(i)*100+h+1000, 1)
			m.Metadata = make([]byte, 64<<10)
			p.add(peer, m)
		}
		got, _ := p.add(peer, adv(5, 1))
		if got != nil {
			require.Equal(t, shared, got)
		}
	}
	_, bytes := p.held()
	require.LessOrEqual(t, bytes, int64(maxPoolSnapshotBytes))
	require.Positive(t, p.dropped)
	require.True(t, p.advertises("honest", shared))
}

func TestSnapshotKeyDistinguishesContents(t *testing.T) {
	a := newSnapshot(adv(10, 1))
	b := adv(10, 1)
	b.Chunks = 4
	require.NotEqual(t, a.key, newSnapshot(b).key)
	c := adv(10, 1)
	c.Metadata = []byte("x")
	require.NotEqual(t, a.key, newSnapshot(c).key)
	require.Equal(t, a.key, newSnapshot(adv(10, 1)).key)
}
