package kvapp

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// restoreFrom offers src's snapshot to dst with src's app hash as the
// trusted one and applies its chunks in order (mutate may change a chunk
// before it is applied). It stops at the first answer other than ACCEPT
// and returns every answer.
func restoreFrom(t *testing.T, src, dst *App, snap *abci.Snapshot, mutate func(i uint32, c []byte) []byte) []*abci.ResponseApplySnapshotChunk {
	t.Helper()
	offer, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: snap, AppHash: src.AppHash()})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_ACCEPT, offer.Result)
	var out []*abci.ResponseApplySnapshotChunk
	for i := uint32(0); i < snap.Chunks; i++ {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: snap.Height, Format: snap.Format, Chunk: i})
		require.NoError(t, err)
		data := c.Chunk
		if mutate != nil {
			data = mutate(i, data)
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

func onlySnapshot(t *testing.T, a *App) *abci.Snapshot {
	t.Helper()
	list, err := a.ListSnapshots(ctx, &abci.RequestListSnapshots{})
	require.NoError(t, err)
	require.Len(t, list.Snapshots, 1)
	return list.Snapshots[0]
}

func requireInfo(t *testing.T, a *App, height int64, appHash []byte) {
	t.Helper()
	info, err := a.Info(ctx, &abci.RequestInfo{})
	require.NoError(t, err)
	require.Equal(t, height, info.LastBlockHeight)
	require.Equal(t, appHash, info.LastBlockAppHash)
	require.Equal(t, uint64(1), info.AppVersion)
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := New(Options{Keys: 300, ValueSize: 100, ChunkSize: 1000, Height: 7, Seed: 3})
	require.Equal(t, Hash(src.Data()), src.AppHash())
	require.Equal(t, int64(len(Serialize(src.Data()))), src.Size())
	dst := New(Options{})
	require.Equal(t, Hash(nil), dst.AppHash())
	snap := onlySnapshot(t, src)
	require.Equal(t, uint64(7), snap.Height)
	require.Equal(t, Format, snap.Format)
	res := restoreFrom(t, src, dst, snap, nil)
	require.Len(t, res, int(snap.Chunks))
	require.Greater(t, len(res), 10)
	require.Equal(t, src.AppHash(), dst.AppHash())
	require.Equal(t, src.Data(), dst.Data())
	require.Equal(t, src.Size(), dst.Size())
	requireInfo(t, dst, 7, src.AppHash())
	st := dst.Stats()
	require.Equal(t, Stats{Offers: 1, Accepted: 1, ChunksApplied: int(snap.Chunks), Restores: 1}, st)
	require.Len(t, dst.Applied(), int(snap.Chunks))
	require.Equal(t, int(snap.Chunks), src.Stats().Loads)

	// Same options, same state; another seed, another state.
	require.Equal(t, src.AppHash(), New(Options{Keys: 300, ValueSize: 100, Height: 9, Seed: 3}).AppHash())
	require.NotEqual(t, src.AppHash(), New(Options{Keys: 300, ValueSize: 100, Seed: 4}).AppHash())
}

func TestCorruptChunkDetected(t *testing.T) {
	src := New(Options{Keys: 300, ValueSize: 100, ChunkSize: 1000, Height: 7})
	snap := onlySnapshot(t, src)
	dst := New(Options{})
	res := restoreFrom(t, src, dst, snap, func(i uint32, c []byte) []byte {
		if i == 3 {
			c = append([]byte(nil), c...)
			c[0] ^= 1
		}
		return c
	})
	require.Len(t, res, 4)
	last := res[3]
	require.Equal(t, abci.ResponseApplySnapshotChunk_RETRY, last.Result)
	require.Equal(t, []uint32{3}, last.RefetchChunks)
	require.Equal(t, []string{"peer"}, last.RejectSenders)
	require.Equal(t, 1, dst.Stats().BadChunks)

	// The refetched good chunk continues the restore.
	for i := uint32(3); i < snap.Chunks; i++ {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: 7, Format: Format, Chunk: i})
		require.NoError(t, err)
		r, err := dst.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{Index: i, Chunk: c.Chunk, Sender: "other"})
		require.NoError(t, err)
		require.Equal(t, abci.ResponseApplySnapshotChunk_ACCEPT, r.Result)
	}
	require.Equal(t, src.AppHash(), dst.AppHash())
}

// A serving app told to corrupt a chunk is caught by the restorer.
func TestServeCorruptChunk(t *testing.T) {
	src := New(Options{Keys: 100, ValueSize: 100, ChunkSize: 1000, Height: 5})
	src.Misbehave(func(k *Knobs) { k.Corrupt(2) })
	res := restoreFrom(t, src, New(Options{}), onlySnapshot(t, src), nil)
	require.Len(t, res, 3)
	require.Equal(t, abci.ResponseApplySnapshotChunk_RETRY, res[2].Result)
	require.Equal(t, []uint32{2}, res[2].RefetchChunks)

	src.Misbehave(func(k *Knobs) { k.CorruptChunks = nil })
	dst := New(Options{})
	restoreFrom(t, src, dst, onlySnapshot(t, src), nil)
	require.Equal(t, src.AppHash(), dst.AppHash())
}

func TestOfferChecks(t *testing.T) {
	src := New(Options{Keys: 10, ValueSize: 10, Height: 2})
	snap := *src.Snapshot(2)
	offerRes := func(dst *App, s abci.Snapshot) abci.ResponseOfferSnapshot_Result {
		t.Helper()
		res, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: &s, AppHash: src.AppHash()})
		require.NoError(t, err)
		return res.Result
	}
	dst := New(Options{})
	bad := snap
	bad.Format = 9
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_FORMAT, offerRes(dst, bad))
	bad = snap
	bad.Hash = []byte("forged")
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT, offerRes(dst, bad))
	bad = snap
	bad.Chunks++
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT, offerRes(dst, bad))
	bad = snap
	bad.Chunks = 0
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT, offerRes(dst, bad))
	res, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT, res.Result)
	require.Equal(t, abci.ResponseOfferSnapshot_ACCEPT, offerRes(dst, snap))

	// Format knobs.
	format := Format
	dst.Misbehave(func(k *Knobs) { k.RejectFormat = &format })
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_FORMAT, offerRes(dst, snap))
	other := New(Options{Formats: []uint32{1, 9}})
	bad = snap
	bad.Format = 9
	require.Equal(t, abci.ResponseOfferSnapshot_ACCEPT, offerRes(other, bad))

	// Scripted answers, then a sticky one.
	dst = New(Options{})
	always := abci.ResponseOfferSnapshot_REJECT_SENDER
	dst.Misbehave(func(k *Knobs) {
		k.OfferResults = []abci.ResponseOfferSnapshot_Result{
			abci.ResponseOfferSnapshot_ABORT, abci.ResponseOfferSnapshot_UNKNOWN, abci.ResponseOfferSnapshot_ACCEPT,
		}
		k.OfferAlways = &always
	})
	require.Equal(t, abci.ResponseOfferSnapshot_ABORT, offerRes(dst, snap))
	require.Equal(t, abci.ResponseOfferSnapshot_UNKNOWN, offerRes(dst, snap))
	require.Equal(t, abci.ResponseOfferSnapshot_ACCEPT, offerRes(dst, snap))
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_SENDER, offerRes(dst, snap))
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_SENDER, offerRes(dst, snap))
	require.Equal(t, 5, dst.Offers())
	require.Equal(t, 1, dst.Stats().Accepted)
}

func TestApplyRules(t *testing.T) {
	src := New(Options{Keys: 100, ValueSize: 100, ChunkSize: 1000, Height: 5})
	snap := onlySnapshot(t, src)
	chunk := func(i uint32) []byte {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: 5, Format: Format, Chunk: i})
		require.NoError(t, err)
		return c.Chunk
	}
	applyRes := func(dst *App, i uint32) *abci.ResponseApplySnapshotChunk {
		res, err := dst.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{Index: i, Chunk: chunk(i), Sender: "p"})
		require.NoError(t, err)
		return res
	}
	dst := New(Options{})
	require.Equal(t, abci.ResponseApplySnapshotChunk_ABORT, applyRes(dst, 0).Result, "no restore in progress")

	_, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: snap, AppHash: src.AppHash()})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseApplySnapshotChunk_ACCEPT, applyRes(dst, 0).Result)
	require.Equal(t, abci.ResponseApplySnapshotChunk_ACCEPT, applyRes(dst, 0).Result, "re-applied: no effect")
	require.Equal(t, abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT, applyRes(dst, 2).Result, "out of order")

	// Overrides for chunk 1: twice RETRY with refetch/reject, then normal.
	dst.Misbehave(func(k *Knobs) {
		k.ApplyResult(1, 2, abci.ResponseApplySnapshotChunk{
			Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{1}, RejectSenders: []string{"x"},
		})
	})
	for n := 0; n < 2; n++ {
		res := applyRes(dst, 1)
		require.Equal(t, abci.ResponseApplySnapshotChunk_RETRY, res.Result)
		require.Equal(t, []uint32{1}, res.RefetchChunks)
		require.Equal(t, []string{"x"}, res.RejectSenders)
	}
	for i := uint32(1); i < snap.Chunks; i++ {
		require.Equal(t, abci.ResponseApplySnapshotChunk_ACCEPT, applyRes(dst, i).Result)
	}
	require.Equal(t, src.AppHash(), dst.AppHash())
	st := dst.Stats()
	require.Equal(t, 1, st.Reapplied)
	require.Equal(t, 1, st.OutOfOrder)
	require.Equal(t, 2, st.Overridden)
	require.Equal(t, int(snap.Chunks), st.ChunksApplied)
}

// The final app hash is checked against the offer's trusted one.
func TestTrustedAppHashChecked(t *testing.T) {
	src := New(Options{Keys: 50, ValueSize: 100, ChunkSize: 1000, Height: 5})
	snap := onlySnapshot(t, src)
	for _, skip := range []bool{false, true} {
		dst := New(Options{})
		dst.Misbehave(func(k *Knobs) { k.SkipAppHashCheck = skip })
		_, err := dst.OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: snap, AppHash: []byte("trusted-but-different")})
		require.NoError(t, err)
		var last *abci.ResponseApplySnapshotChunk
		for i := uint32(0); i < snap.Chunks; i++ {
			c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: 5, Format: Format, Chunk: i})
			require.NoError(t, err)
			last, err = dst.ApplySnapshotChunk(ctx, &abci.RequestApplySnapshotChunk{Index: i, Chunk: c.Chunk})
			require.NoError(t, err)
		}
		if skip {
			require.Equal(t, abci.ResponseApplySnapshotChunk_ACCEPT, last.Result)
			require.Equal(t, src.AppHash(), dst.AppHash())
		} else {
			require.Equal(t, abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT, last.Result)
			require.Equal(t, 1, dst.Stats().HashMismatches)
			requireInfo(t, dst, 0, Hash(nil))
		}
	}
}

func TestStreamingMode(t *testing.T) {
	opts := Options{StreamBytes: 5<<20 + 12345, ChunkSize: 256 << 10, Seed: 42, Height: 11}
	src := New(opts)
	require.True(t, src.Streaming())
	require.Nil(t, src.Data())
	require.Equal(t, opts.StreamBytes, src.Size())
	snap := onlySnapshot(t, src)
	require.Equal(t, uint32(21), snap.Chunks)
	require.Equal(t, KindStream, snap.Metadata[0])

	// The app hash is as documented, over the chunks served.
	h := sha256.New()
	h.Write([]byte("kvapp-stream"))
	var total int
	for i := uint32(0); i < snap.Chunks; i++ {
		c, err := src.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: 11, Format: Format, Chunk: i})
		require.NoError(t, err)
		sum := sha256.Sum256(c.Chunk)
		require.Equal(t, sum[:], snap.Metadata[1+32*i:33+32*i])
		h.Write(sum[:])
		total += len(c.Chunk)
	}
	require.Equal(t, int(opts.StreamBytes), total)
	h.Write(binary.AppendUvarint(nil, uint64(total)))
	require.Equal(t, h.Sum(nil), src.AppHash())

	dst := New(Options{})
	restoreFrom(t, src, dst, snap, nil)
	require.Equal(t, src.AppHash(), dst.AppHash())
	require.True(t, dst.Streaming())
	require.Equal(t, opts.StreamBytes, dst.Size())
	requireInfo(t, dst, 11, src.AppHash())
	require.Nil(t, dst.AddSnapshot(12, Format), "a restored stream keeps no bytes")

	// Another app with the same options agrees; another seed does not.
	require.Equal(t, src.AppHash(), New(opts).AppHash())
	opts.Seed++
	require.NotEqual(t, src.AppHash(), New(opts).AppHash())

	// Corrupt stream chunks are caught too.
	src.Misbehave(func(k *Knobs) { k.Corrupt(20) })
	res := restoreFrom(t, src, New(Options{}), snap, nil)
	require.Equal(t, abci.ResponseApplySnapshotChunk_RETRY, res[20].Result)

	// No transactions.
	ct, err := src.CheckTx(ctx, &abci.RequestCheckTx{Tx: []byte("a=b")})
	require.NoError(t, err)
	require.Equal(t, CodeReadOnly, ct.Code)
}

func finalize(t *testing.T, a *App, height int64, txs ...string) *abci.ResponseFinalizeBlock {
	t.Helper()
	req := &abci.RequestFinalizeBlock{Height: height}
	for _, tx := range txs {
		req.Txs = append(req.Txs, []byte(tx))
	}
	res, err := a.FinalizeBlock(ctx, req)
	require.NoError(t, err)
	_, err = a.Commit(ctx, &abci.RequestCommit{})
	require.NoError(t, err)
	return res
}

func TestLiveChain(t *testing.T) {
	a := New(Options{SnapshotInterval: 3, SnapshotKeep: 2, ChunkSize: 64})
	init, err := a.InitChain(ctx, &abci.RequestInitChain{InitialHeight: 1})
	require.NoError(t, err)
	require.Equal(t, Hash(nil), init.AppHash)

	for _, tx := range []string{"a=1", "k=", "=v", "nokey"} {
		res, err := a.CheckTx(ctx, &abci.RequestCheckTx{Tx: []byte(tx)})
		require.NoError(t, err)
		want := CodeOK
		if tx == "=v" || tx == "nokey" {
			want = CodeBadTx
		}
		require.Equal(t, want, res.Code, tx)
	}

	res := finalize(t, a, 1, "a=1", "bad", "b=2=3")
	require.Equal(t, CodeOK, res.TxResults[0].Code)
	require.Equal(t, CodeBadTx, res.TxResults[1].Code)
	require.Equal(t, CodeOK, res.TxResults[2].Code)
	want := map[string][]byte{"a": []byte("1"), "b": []byte("2=3")}
	require.Equal(t, want, a.Data())
	require.Equal(t, Hash(want), res.AppHash)
	requireInfo(t, a, 1, res.AppHash)

	// FinalizeBlock does not change the committed state before Commit.
	_, err = a.FinalizeBlock(ctx, &abci.RequestFinalizeBlock{Height: 2, Txs: [][]byte{[]byte("a=9")}})
	require.NoError(t, err)
	require.Equal(t, []byte("1"), a.Data()["a"])
	_, err = a.Commit(ctx, &abci.RequestCommit{})
	require.NoError(t, err)
	q, err := a.Query(ctx, &abci.RequestQuery{Data: []byte("a")})
	require.NoError(t, err)
	require.Equal(t, []byte("9"), q.Value)
	require.Equal(t, int64(2), q.Height)
	q, err = a.Query(ctx, &abci.RequestQuery{Path: "/b"})
	require.NoError(t, err)
	require.Equal(t, []byte("2=3"), q.Value)
	q, err = a.Query(ctx, &abci.RequestQuery{Data: []byte("zz")})
	require.NoError(t, err)
	require.Nil(t, q.Value)

	// Snapshots every 3 heights, the last 2 kept.
	for h := int64(3); h <= 9; h++ {
		r := finalize(t, a, h, fmt.Sprintf("h%d=%d", h, h))
		require.Equal(t, a.AppHash(), r.AppHash)
	}
	var heights []uint64
	for _, s := range a.Snapshots() {
		heights = append(heights, s.Height)
	}
	require.Equal(t, []uint64{6, 9}, heights)
	require.Equal(t, 9, a.Stats().Commits)

	// A node restored from the snapshot at 9 continues the chain in step.
	dst := New(Options{})
	restoreFrom(t, a, dst, a.Snapshot(9), nil)
	requireInfo(t, dst, 9, a.AppHash())
	for h := int64(10); h <= 12; h++ {
		txs := []string{fmt.Sprintf("x%d=%d", h, h), "x=1"}
		if h == 11 {
			txs = nil // an empty block keeps the hash
		}
		before := a.AppHash()
		ra, rd := finalize(t, a, h, txs...), finalize(t, dst, h, txs...)
		require.Equal(t, ra.AppHash, rd.AppHash)
		require.Equal(t, h == 11, string(before) == string(ra.AppHash))
	}
	require.Equal(t, a.Data(), dst.Data())
	require.Equal(t, a.AppHash(), dst.AppHash())
	require.Equal(t, []uint64{9, 12}, []uint64{a.Snapshots()[0].Height, a.Snapshots()[1].Height})
}

func TestSnapshotsAtHeightsAndFormats(t *testing.T) {
	a := New(Options{Keys: 20, ValueSize: 10, Height: 10, ChunkSize: 50})
	s2 := a.AddSnapshot(8, 2)
	a.AddSnapshot(10, 2)
	a.AddSnapshot(10, 2) // replaces
	require.Len(t, a.Snapshots(), 3)
	require.Equal(t, uint32(2), s2.Format)

	// A restorer not supporting format 2 refuses it; one that does restores it.
	res, err := New(Options{}).OfferSnapshot(ctx, &abci.RequestOfferSnapshot{Snapshot: s2})
	require.NoError(t, err)
	require.Equal(t, abci.ResponseOfferSnapshot_REJECT_FORMAT, res.Result)
	dst := New(Options{Formats: []uint32{2}})
	restoreFrom(t, a, dst, s2, nil)
	requireInfo(t, dst, 8, a.AppHash())

	a.DeleteSnapshot(10, 2)
	a.DeleteSnapshot(8, 2)
	require.Len(t, a.Snapshots(), 1)
	c, err := a.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{Height: 8, Format: 2})
	require.NoError(t, err)
	require.Nil(t, c.Chunk, "deleted")
}

func TestLoadKnobs(t *testing.T) {
	a := New(Options{Keys: 20, ValueSize: 10, Height: 10, ChunkSize: 50})
	req := &abci.RequestLoadSnapshotChunk{Height: 10, Format: Format, Chunk: 1}

	a.Misbehave(func(k *Knobs) { k.Missing(1) })
	c, err := a.LoadSnapshotChunk(ctx, req)
	require.NoError(t, err)
	require.Nil(t, c.Chunk)

	boom := errors.New("boom")
	a.Misbehave(func(k *Knobs) { k.MissingChunks, k.LoadError = nil, boom })
	_, err = a.LoadSnapshotChunk(ctx, req)
	require.ErrorIs(t, err, boom)
	a.Misbehave(func(k *Knobs) { k.LoadError = nil })

	// A gate holds loads until closed, and honours the context.
	gate := make(chan struct{})
	a.Misbehave(func(k *Knobs) { k.LoadGate = gate })
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = a.LoadSnapshotChunk(cctx, req)
	require.ErrorIs(t, err, context.Canceled)
	done := make(chan []byte)
	go func() {
		c, _ := a.LoadSnapshotChunk(ctx, req)
		done <- c.Chunk
	}()
	select {
	case <-done:
		t.Fatal("load went through a closed gate")
	case <-a.Changed(): // any change would be the load: there must be none
		t.Fatal("load counted before the gate opened")
	default:
	}
	close(gate)
	require.NotEmpty(t, <-done)

	// A delay honours the context.
	a.Misbehave(func(k *Knobs) { k.LoadGate, k.LoadDelay = nil, time.Hour })
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = a.LoadSnapshotChunk(dctx, req)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// Knobs, counters and hooks are safe while the app is in use.
func TestConcurrentUseAndWaiting(t *testing.T) {
	src := New(Options{Keys: 200, ValueSize: 100, ChunkSize: 1000, Height: 5})
	snap := onlySnapshot(t, src)
	dst := New(Options{})
	var hooked []uint32
	var hookMtx sync.Mutex
	dst.OnApply(func(i uint32) {
		hookMtx.Lock()
		hooked = append(hooked, i)
		hookMtx.Unlock()
	})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 100; i++ {
			src.Misbehave(func(k *Knobs) { k.LoadDelay = 0 })
			dst.Misbehave(func(k *Knobs) { k.SkipAppHashCheck = false })
			_ = dst.Stats()
		}
	}()
	waited := make(chan error, 1)
	go func() {
		defer wg.Done()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		waited <- dst.WaitRestored(wctx)
	}()
	require.NoError(t, dst.WaitOffers(ctx, 0))
	restoreFrom(t, src, dst, snap, nil)
	wg.Wait()
	require.NoError(t, <-waited)
	require.NoError(t, dst.WaitApplied(ctx, int(snap.Chunks)))
	hookMtx.Lock()
	require.Len(t, hooked, int(snap.Chunks))
	hookMtx.Unlock()

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, dst.WaitApplied(cctx, 1000), context.Canceled)
}

// TestEmptyStateTakesNoSnapshot: an empty state would be one empty chunk,
// which peers cannot serve, so the app takes no snapshot of it.
func TestEmptyStateTakesNoSnapshot(t *testing.T) {
	a := New(Options{SnapshotInterval: 1})
	require.Nil(t, a.AddSnapshot(5, Format))
	require.Empty(t, a.Snapshots())
}
