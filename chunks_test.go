package statesync

import (
	"os"
	"testing"

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
