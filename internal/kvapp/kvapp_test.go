package kvapp

import (
	"context"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func restore(t *testing.T, src, dst *App, corrupt map[uint32]bool) []*abci.ResponseApplySnapshotChunk {
	t.Helper()
	ctx := context.Background()
	list, err := src.ListSnapshots(ctx, &abci.RequestListSnapshots{})
	require.NoError(t, err)
	require.Len(t, list.Snapshots, 1)
	snap := list.Snapshots[0]
	offer, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: snap, AppHash: src.AppHash()})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_ACCEPT, offer.Result)
	var out []*abci.ResponseApplySnapshotChunk
	for i := uint32(0); i < snap.Chunks; i++ {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: snap.Height, Format: snap.Format, Chunk: i})
		require.NoError(t, err)
		data := c.Chunk
		if corrupt[i] {
			data = append([]byte(nil), data...)
			data[0] ^= 1
		}
		res, err := dst.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{Index: i, Chunk: data, Sender: "peer"})
		require.NoError(t, err)
		out = append(out, res)
		if res.Result != abci.ResponseApplySnapshotChunk_ACCEPT {
			return out
		}
	}
	return out
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := New(Options{Keys: 300, ValueSize: 100, ChunkSize: 1000, Height: 7, Seed: 3})
	dst := New(Options{})
	res := restore(t, src, dst, nil)
	require.Greater(t, len(res), 10)
	require.Equal(t, src.AppHash(), dst.AppHash())
	require.Equal(t, src.Data(), dst.Data())
	info, err := dst.Info(context.Background(), &abci.RequestInfo{})
	require.NoError(t, err)
	require.Equal(t, int64(7), info.LastBlockHeight)
	require.Equal(t, src.AppHash(), info.LastBlockAppHash)
}

func TestCorruptChunkDetected(t *testing.T) {
	src := New(Options{Keys: 300, ValueSize: 100, ChunkSize: 1000, Height: 7})
	res := restore(t, src, New(Options{}), map[uint32]bool{3: true})
	last := res[len(res)-1]
	require.Equal(t, abci.ResponseApplySnapshotChunk_RETRY, last.Result)
	require.Equal(t, []uint32{3}, last.RefetchChunks)
	require.Equal(t, []string{"peer"}, last.RejectSenders)
}

func TestOfferChecks(t *testing.T) {
	ctx := context.Background()
	src := New(Options{Keys: 10, ValueSize: 10, Height: 2})
	snap := *src.Snapshot(2)
	dst := New(Options{})
	bad := snap
	bad.Format = 9
	res, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: &bad})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_FORMAT, res.Result)
	bad = snap
	bad.Hash = []byte("forged")
	res, err = dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: &bad})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT, res.Result)
}
