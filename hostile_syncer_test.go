package statesync

import (
	"fmt"
	"testing"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/chaingen"
	ssproto "github.com/statesync/statesync/proto"
)

// newInboxNode is a started Reactor on a fakeNet with a syncer installed
// (as Sync installs it), for driving the syncer's inbox directly.
func newInboxNode(t *testing.T) (*bfNode, *syncer) {
	t.Helper()
	chain := testChain(t, chaingen.Options{Height: 4})
	n := newBackfillNode(t, chain, nil)
	s := newSyncer(n.r)
	n.r.mtx.Lock()
	n.r.syncer = s
	n.r.mtx.Unlock()
	t.Cleanup(func() {
		n.r.mtx.Lock()
		n.r.syncer = nil
		n.r.mtx.Unlock()
	})
	return n, s
}

// TestSnapshotInboxRefusesFloods: advertisements nobody asked for are
// dropped at the door, before they are queued, and a peer that keeps
// sending them is punished; an honest peer's advertisement, asked for,
// still reaches the pool.
func TestSnapshotInboxRefusesFloods(t *testing.T) {
	n, s := newInboxNode(t)
	n.net.add("flooder", &fakePeer{})
	n.net.add("honest", &fakePeer{})
	big := make([]byte, 64<<10)
	for i := range 4096 {
		n.r.Deliver("flooder", SnapshotChannel, &ssproto.SnapshotsResponse{
			Height: uint64(i + 1), Format: 1, Chunks: 1, Hash: []byte{1}, Metadata: big,
		})
	}
	require.Contains(t, n.net.punishedPeers(), p2p.ID("flooder"))
	s.inMtx.Lock()
	queued := len(s.snapsIn)
	s.inMtx.Unlock()
	require.Zero(t, queued, "nothing unsolicited is queued")

	s.requestSnapshots("honest")
	for i := range recentSnapshots + snapshotSlack { // more than asked: the excess is dropped, forgiven
		n.r.Deliver("honest", SnapshotChannel, &ssproto.SnapshotsResponse{
			Height: uint64(100 + i), Format: 1, Chunks: 1, Hash: []byte{2},
		})
	}
	s.inMtx.Lock()
	queued = len(s.snapsIn)
	s.inMtx.Unlock()
	require.Equal(t, recentSnapshots, queued, "a peer queues at most what it was asked for")
	require.NotContains(t, n.net.punishedPeers(), p2p.ID("honest"))
	s.handleInbox(nil, nil)
	held, _ := s.pool.held()
	require.Equal(t, recentSnapshots, held)
}

// TestSnapshotInboxDropsDepartedPeers: what a peer queued before leaving
// never reaches the pool, and its snapshots leave the pool with it.
func TestSnapshotInboxDropsDepartedPeers(t *testing.T) {
	n, s := newInboxNode(t)
	for i := range 20 {
		id := p2p.ID(fmt.Sprintf("churner%d", i))
		n.net.add(id, &fakePeer{})
		s.requestSnapshots(id)
		n.r.Deliver(id, SnapshotChannel, &ssproto.SnapshotsResponse{
			Height: uint64(i + 1), Format: 1, Chunks: 1, Hash: []byte{1}, Metadata: make([]byte, 1024),
		})
		if i%2 == 0 {
			s.handleInbox(nil, nil) // pooled, then the peer leaves
		}
		n.net.remove(id)
	}
	s.handleInbox(nil, nil)
	held, bytes := s.pool.held()
	require.Zero(t, held)
	require.Zero(t, bytes)
	s.inMtx.Lock()
	defer s.inMtx.Unlock()
	require.Empty(t, s.asked)
	require.Empty(t, s.excess)
}
