package kvapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"hash"
	"slices"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
)

// Metadata kinds (first byte of a snapshot's metadata).
const (
	KindKV     byte = 'K'
	KindStream byte = 'S'
)

type stored struct {
	snap   *abci.Snapshot
	chunks [][]byte // key-value snapshots
	stream *stream  // stream snapshots: chunks generated on demand
}

func cloneSnapshot(s *abci.Snapshot) *abci.Snapshot {
	c := *s
	c.Hash = slices.Clone(s.Hash)
	c.Metadata = slices.Clone(s.Metadata)
	return &c
}

// addSnapshot snapshots the committed state under (height, format),
// replacing a snapshot with the same height and format. Caller holds
// a.mtx. A restored stream cannot be snapshotted (its bytes are gone):
// nil.
func (a *App) addSnapshot(height uint64, format uint32) *abci.Snapshot {
	st := &stored{}
	var sums [][]byte
	kind := KindKV
	switch {
	case a.streamed && a.stream == nil:
		return nil
	case a.streamed:
		kind, st.stream, sums = KindStream, a.stream, a.stream.digest().sums
	default:
		ser := Serialize(a.data)
		if len(ser) == 0 {
			// An empty state would be one empty chunk, which no peer can
			// serve (an empty chunk reads as missing): take no snapshot.
			return nil
		}
		for off := 0; ; off += a.opts.ChunkSize {
			end := min(off+a.opts.ChunkSize, len(ser))
			c := ser[off:end:end]
			sum := sha256.Sum256(c)
			st.chunks, sums = append(st.chunks, c), append(sums, sum[:])
			if end == len(ser) {
				break
			}
		}
	}
	meta := make([]byte, 0, 1+32*len(sums))
	meta = append(meta, kind)
	for _, s := range sums {
		meta = append(meta, s...)
	}
	h := sha256.Sum256(meta)
	st.snap = &abci.Snapshot{Height: height, Format: format, Chunks: uint32(len(sums)), Hash: h[:], Metadata: meta}
	a.snapshots = slices.DeleteFunc(a.snapshots, func(s *stored) bool {
		return s.snap.Height == height && s.snap.Format == format
	})
	a.snapshots = append(a.snapshots, st)
	return cloneSnapshot(st.snap)
}

// prune keeps the snapshots of the keep highest heights. Caller holds a.mtx.
func (a *App) prune(keep int) {
	var heights []uint64
	for _, s := range a.snapshots {
		if !slices.Contains(heights, s.snap.Height) {
			heights = append(heights, s.snap.Height)
		}
	}
	if len(heights) <= keep {
		return
	}
	slices.Sort(heights)
	cut := heights[len(heights)-keep]
	a.snapshots = slices.DeleteFunc(a.snapshots, func(s *stored) bool { return s.snap.Height < cut })
}

// AddSnapshot takes a snapshot of the committed state and serves it as
// (height, format), whatever the app's height (so one state can be served
// at several heights, or in a format a restorer does not support). It
// replaces a snapshot with the same height and format, and returns nil for
// a restored stream (whose bytes were not kept) and for an empty state
// (whose only chunk would be empty, which the wire cannot carry).
func (a *App) AddSnapshot(height int64, format uint32) *abci.Snapshot {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.addSnapshot(uint64(height), format)
}

// DeleteSnapshot stops serving the snapshot (height, format).
func (a *App) DeleteSnapshot(height int64, format uint32) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.snapshots = slices.DeleteFunc(a.snapshots, func(s *stored) bool {
		return s.snap.Height == uint64(height) && s.snap.Format == format
	})
}

// Snapshot returns (a copy of) the app's snapshot at height, in any
// format, or nil.
func (a *App) Snapshot(height uint64) *abci.Snapshot {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	for _, s := range a.snapshots {
		if s.snap.Height == height {
			return cloneSnapshot(s.snap)
		}
	}
	return nil
}

// Snapshots returns (copies of) the snapshots served, oldest first.
func (a *App) Snapshots() []*abci.Snapshot {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	out := make([]*abci.Snapshot, 0, len(a.snapshots))
	for _, s := range a.snapshots {
		out = append(out, cloneSnapshot(s.snap))
	}
	return out
}

// ListSnapshots implements abci.Application.
func (a *App) ListSnapshots(context.Context, *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	return &abci.ResponseListSnapshots{Snapshots: a.Snapshots()}, nil
}

// LoadSnapshotChunk implements abci.Application. Knobs: LoadGate,
// LoadDelay, LoadError, MissingChunks, CorruptChunks.
func (a *App) LoadSnapshotChunk(ctx context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	a.mtx.Lock()
	gate, delay := a.knobs.LoadGate, a.knobs.LoadDelay
	a.mtx.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	a.mtx.Lock()
	a.stats.Loads++
	a.notify()
	if err := a.knobs.LoadError; err != nil {
		a.mtx.Unlock()
		return nil, err
	}
	if a.knobs.MissingChunks[req.Chunk] {
		a.mtx.Unlock()
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	corrupt := a.knobs.CorruptChunks[req.Chunk]
	var st *stored
	for _, s := range a.snapshots {
		if s.snap.Height == req.Height && s.snap.Format == req.Format && req.Chunk < s.snap.Chunks {
			st = s
			break
		}
	}
	a.mtx.Unlock()
	if st == nil {
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	var c []byte
	if st.stream != nil {
		c = st.stream.chunk(req.Chunk)
	} else {
		c = st.chunks[req.Chunk]
	}
	if corrupt {
		c = slices.Clone(c)
		if len(c) == 0 {
			c = append(c, 0xff)
		} else {
			c[len(c)/2] ^= 0xff
		}
	}
	return &abci.ResponseLoadSnapshotChunk{Chunk: c}, nil
}

// restoreState is a restore in progress.
type restoreState struct {
	snap    *abci.Snapshot
	kind    byte
	trusted []byte // app hash of the offer; empty = not checked
	sums    [][]byte
	next    uint32
	hasher  hash.Hash     // key-value kind: SHA-256 of the serialisation
	stream  *streamHasher // stream kind
	buf     bytes.Buffer  // key-value kind only
	size    int64
}

func offer(res abci.ResponseOfferSnapshot_Result) *abci.ResponseOfferSnapshot {
	return &abci.ResponseOfferSnapshot{Result: res}
}

// OfferSnapshot implements abci.Application. Knobs: OfferResults,
// OfferAlways, RejectFormat. An accepted offer replaces a restore in
// progress.
func (a *App) OfferSnapshot(_ context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.stats.Offers++
	a.notify()
	if len(a.knobs.OfferResults) > 0 {
		res := a.knobs.OfferResults[0]
		a.knobs.OfferResults = a.knobs.OfferResults[1:]
		if res != abci.ResponseOfferSnapshot_ACCEPT {
			return offer(res), nil
		}
	} else if a.knobs.OfferAlways != nil {
		return offer(*a.knobs.OfferAlways), nil
	}
	s := req.Snapshot
	if s == nil {
		return offer(abci.ResponseOfferSnapshot_REJECT), nil
	}
	if !slices.Contains(a.opts.Formats, s.Format) || (a.knobs.RejectFormat != nil && *a.knobs.RejectFormat == s.Format) {
		return offer(abci.ResponseOfferSnapshot_REJECT_FORMAT), nil
	}
	sum := sha256.Sum256(s.Metadata)
	if s.Chunks == 0 || len(s.Metadata) != 1+32*int(s.Chunks) || !bytes.Equal(sum[:], s.Hash) ||
		(s.Metadata[0] != KindKV && s.Metadata[0] != KindStream) {
		return offer(abci.ResponseOfferSnapshot_REJECT), nil
	}
	rs := &restoreState{snap: cloneSnapshot(s), kind: s.Metadata[0], trusted: slices.Clone(req.AppHash)}
	if rs.kind == KindKV {
		rs.hasher = sha256.New()
	} else {
		rs.stream = newStreamHasher()
	}
	for i := 0; i < int(s.Chunks); i++ {
		rs.sums = append(rs.sums, rs.snap.Metadata[1+32*i:1+32*i+32])
	}
	a.restore = rs
	a.stats.Accepted++
	return offer(abci.ResponseOfferSnapshot_ACCEPT), nil
}

func apply(res abci.ResponseApplySnapshotChunk_Result) *abci.ResponseApplySnapshotChunk {
	return &abci.ResponseApplySnapshotChunk{Result: res}
}

// ApplySnapshotChunk implements abci.Application. Knobs: ApplyResults,
// SkipAppHashCheck.
func (a *App) ApplySnapshotChunk(_ context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	a.mtx.Lock()
	if q := a.knobs.ApplyResults[req.Index]; len(q) > 0 {
		res := q[0]
		a.knobs.ApplyResults[req.Index] = q[1:]
		a.stats.Overridden++
		a.notify()
		a.mtx.Unlock()
		res.RefetchChunks = slices.Clone(res.RefetchChunks)
		res.RejectSenders = slices.Clone(res.RejectSenders)
		return &res, nil
	}
	res, hook := a.applyChunk(req)
	a.notify()
	a.mtx.Unlock()
	if hook != nil {
		hook(req.Index)
	}
	return res, nil
}

// applyChunk does the work of ApplySnapshotChunk under a.mtx and returns
// the hook to call for an accepted chunk.
func (a *App) applyChunk(req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, func(uint32)) {
	rs := a.restore
	switch {
	case rs == nil:
		return apply(abci.ResponseApplySnapshotChunk_ABORT), nil
	case req.Index >= rs.snap.Chunks || req.Index > rs.next:
		a.stats.OutOfOrder++
		return apply(abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT), nil
	}
	sum := sha256.Sum256(req.Chunk)
	if !bytes.Equal(sum[:], rs.sums[req.Index]) {
		a.stats.BadChunks++
		res := &abci.ResponseApplySnapshotChunk{
			Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{req.Index},
		}
		if req.Sender != "" {
			res.RejectSenders = []string{req.Sender}
		}
		return res, nil
	}
	if req.Index < rs.next { // already applied: nothing to do
		a.stats.Reapplied++
		return apply(abci.ResponseApplySnapshotChunk_ACCEPT), nil
	}
	rs.size += int64(len(req.Chunk))
	if rs.kind == KindKV {
		rs.hasher.Write(req.Chunk)
		rs.buf.Write(req.Chunk)
	} else {
		rs.stream.add(sum[:], len(req.Chunk))
	}
	rs.next++
	a.stats.ChunksApplied++
	a.applied = append(a.applied, req.Index)
	if rs.next < rs.snap.Chunks {
		return apply(abci.ResponseApplySnapshotChunk_ACCEPT), a.onApply
	}
	// Last chunk: check and install the state.
	a.restore = nil
	var appHash []byte
	if rs.kind == KindKV {
		appHash = rs.hasher.Sum(nil)
	} else {
		appHash = rs.stream.sum()
	}
	if len(rs.trusted) > 0 && !bytes.Equal(appHash, rs.trusted) && !a.knobs.SkipAppHashCheck {
		a.stats.HashMismatches++
		return apply(abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT), nil
	}
	if rs.kind == KindKV {
		data, err := parse(rs.buf.Bytes())
		if err != nil {
			a.stats.HashMismatches++
			return apply(abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT), nil
		}
		a.data, a.streamed, a.stream = data, false, nil
	} else {
		a.data, a.streamed, a.stream = nil, true, nil
	}
	a.height, a.appHash, a.size, a.pending = int64(rs.snap.Height), appHash, rs.size, nil
	a.persist()
	a.stats.Restores++
	return apply(abci.ResponseApplySnapshotChunk_ACCEPT), a.onApply
}
