package statesync

import (
	"context"
	"testing"

	"github.com/cometbft/cometbft/p2p"
	"github.com/stretchr/testify/require"

	ssproto "github.com/statesync/statesync/proto"
)

func TestServeQueueCapsAndFairness(t *testing.T) {
	q := newServeQueue(3, 1)
	job := func(peer p2p.ID, i uint32) serveJob {
		return serveJob{peer: peer, ch: ChunkChannel, msg: &ssproto.ChunkRequest{Height: 1, Index: i}}
	}
	for i := uint32(0); i < 3; i++ {
		require.True(t, q.push(job("greedy", i)))
	}
	require.False(t, q.push(job("greedy", 3)), "a peer cannot queue more than its cap")
	require.True(t, q.push(job("polite", 0)))

	// One running per peer; peers alternate.
	j1, ok := q.pop()
	require.True(t, ok)
	j2, ok := q.pop()
	require.True(t, ok)
	require.NotEqual(t, j1.peer, j2.peer)
	_, ok = q.pop()
	require.False(t, ok, "both peers are at their running cap")
	q.done("greedy")
	j3, ok := q.pop()
	require.True(t, ok)
	require.Equal(t, p2p.ID("greedy"), j3.peer)

	// A departed peer's queue is dropped.
	q.dropPeer("greedy")
	q.done("greedy")
	q.done("polite")
	_, ok = q.pop()
	require.False(t, ok)

	// next returns when ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, ok = q.next(ctx)
	require.False(t, ok)
}
