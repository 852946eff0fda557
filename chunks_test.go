package statesync

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func testSnapshot(height uint64, chunks uint32, hash string) *snapshot {
	s := &snapshot{Height: height, Format: 1, Chunks: chunks, Hash: []byte(hash)}
	s.key[0], s.key[1] = byte(height), hash[0]
	return s
}

// TestChunkSpoolSurvivesReopen: chunk files written by the writer survive
// closing the spool (a crash); reopening keeps the whole ones with their
// senders and drops torn, temporary and out-of-range files.
func TestChunkSpoolSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	snap := testSnapshot(5, 4, "h")
	q, err := openChunkSpool(dir, snap)
	require.NoError(t, err)
	require.NoError(t, writeSpoolFile(q.path(0), 0, []byte("zero"), "a"))
	require.NoError(t, writeSpoolFile(q.path(1), 1, []byte("one"), "b"))
	require.NoError(t, writeSpoolFile(q.path(2), 2, []byte("two"), "a"))
	q.mark(0, "a", 4)
	q.mark(1, "b", 3)
	require.EqualValues(t, 2, q.count)
	require.EqualValues(t, 7, q.bytes)

	// A torn write of chunk 2 (the machine crashed before the data reached
	// the disk), a leftover temporary file and an index out of range.
	raw, err := os.ReadFile(q.path(2))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(q.path(2), raw[:len(raw)-1], 0o600))
	require.NoError(t, os.WriteFile(q.path(3)+".tmp", []byte("x"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(q.dir, "9"), []byte("x"), 0o600))
	q.release()

	q, err = openChunkSpool(dir, snap)
	require.NoError(t, err)
	defer q.remove()
	require.True(t, q.has(0))
	require.True(t, q.has(1))
	require.False(t, q.has(2), "a torn chunk is fetched again")
	require.Equal(t, "b", string(q.senderOf(1)))
	require.ElementsMatch(t, []string{"a", "b"}, []string{string(q.senders()[0]), string(q.senders()[1])})
	data, err := readSpoolFile(q.path(0), 0)
	require.NoError(t, err)
	require.Equal(t, []byte("zero"), data)
	for _, name := range []string{"2", "3.tmp", "9"} {
		_, err := os.Stat(filepath.Join(q.dir, name))
		require.True(t, os.IsNotExist(err), "%s removed", name)
	}

	// A flipped byte is caught when the chunk is read.
	raw, err = os.ReadFile(q.path(1))
	require.NoError(t, err)
	raw[len(raw)-1] ^= 1
	require.NoError(t, os.WriteFile(q.path(1), raw, 0o600))
	_, err = readSpoolFile(q.path(1), 1)
	require.ErrorIs(t, err, errSpoolCorrupt)
	require.Equal(t, []uint32{0}, q.fromSender("a", 0))
	require.True(t, q.unmark(0))
	require.False(t, q.has(0))
}

// TestChunkSpoolRemovesStaleSpools: opening a spool deletes the spools of
// other snapshots under temp_dir, except those an open spool holds.
func TestChunkSpoolRemovesStaleSpools(t *testing.T) {
	dir := t.TempDir()
	old, err := openChunkSpool(dir, testSnapshot(1, 2, "a"))
	require.NoError(t, err)
	require.NoError(t, writeSpoolFile(old.path(0), 0, []byte("x"), "p"))
	old.release() // a crashed Sync's leftover
	held, err := openChunkSpool(dir, testSnapshot(2, 2, "b"))
	require.NoError(t, err)
	defer held.remove()
	_, err = os.Stat(old.dir)
	require.True(t, os.IsNotExist(err), "the leftover spool is deleted")

	q, err := openChunkSpool(dir, testSnapshot(3, 2, "c"))
	require.NoError(t, err)
	_, err = os.Stat(held.dir)
	require.NoError(t, err, "a spool held by a running Sync is kept")
	require.NoError(t, q.remove())
	_, err = os.Stat(q.dir)
	require.True(t, os.IsNotExist(err))
}
