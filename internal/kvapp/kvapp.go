// Package kvapp is an in-process ABCI application for tests: a key-value
// state that really snapshots and restores, and that can be told to
// misbehave.
//
// State and hash. The state is a sorted key/value map. Its canonical
// serialisation is, per key in order, uvarint(len(k)) k uvarint(len(v)) v;
// the app hash is the SHA-256 of that serialisation.
//
// Snapshot format 1. The serialisation cut every ChunkSize bytes. The
// metadata is the SHA-256 of every chunk, concatenated; the snapshot hash
// is the SHA-256 of the metadata. A restoring app checks each chunk against
// the metadata, so a corrupt chunk is caught at once: it answers RETRY with
// RefetchChunks=[i] and RejectSenders=[sender].
package kvapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/rand"
	"sort"
	"sync"

	abci "github.com/cometbft/cometbft/abci/types"
)

// Format is the only snapshot format the app produces and accepts.
const Format uint32 = 1

// Options describe the state a serving app generates.
type Options struct {
	Keys       int    // number of keys
	ValueSize  int    // bytes per value
	ChunkSize  int    // snapshot chunk size (default 64 KiB)
	Seed       int64  // deterministic content
	Height     int64  // height of the state and of its snapshot
	AppVersion uint64 // reported by Info (default 1)
}

// App is the application. Safe for concurrent use.
type App struct {
	abci.BaseApplication

	mtx        sync.Mutex
	data       map[string][]byte
	height     int64
	appHash    []byte
	appVersion uint64
	chunkSize  int
	snapshots  []*stored

	restore *restoreState
	knobs   Knobs

	offers  int
	applied []uint32
	onApply func(index uint32)
}

type stored struct {
	snap   *abci.Snapshot
	chunks [][]byte
}

type restoreState struct {
	snap     *abci.Snapshot
	appHash  []byte
	next     uint32
	buf      bytes.Buffer
	hasher   hash.Hash
	checksum [][]byte
}

// Knobs make the app misbehave. Set them with Misbehave.
type Knobs struct {
	// OfferResult, if set, is returned by OfferSnapshot (once per entry,
	// in order; the last one sticks if Sticky).
	OfferResults []abci.ResponseOfferSnapshot_Result
	// RejectFormat makes OfferSnapshot answer REJECT_FORMAT for it.
	RejectFormat *uint32
	// ApplyResults[i] lists results ApplySnapshotChunk returns for chunk i
	// before behaving normally, one per call.
	ApplyResults map[uint32][]abci.ResponseApplySnapshotChunk
	// CorruptChunks are served with a flipped byte.
	CorruptChunks map[uint32]bool
	// MissingChunks are served as missing (nil).
	MissingChunks map[uint32]bool
	// LoadGate, if set, blocks LoadSnapshotChunk until closed.
	LoadGate chan struct{}
}

// New returns an app holding the generated state of opts and a snapshot
// of it at opts.Height. With opts.Keys == 0 it is an empty app, ready to
// be restored.
func New(opts Options) *App {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 64 << 10
	}
	if opts.AppVersion == 0 {
		opts.AppVersion = 1
	}
	a := &App{data: make(map[string][]byte), chunkSize: opts.ChunkSize, appVersion: opts.AppVersion}
	rng := rand.New(rand.NewSource(opts.Seed))
	for i := 0; i < opts.Keys; i++ {
		v := make([]byte, opts.ValueSize)
		rng.Read(v)
		a.data[fmt.Sprintf("key-%08d", i)] = v
	}
	a.height = opts.Height
	a.appHash = Hash(a.data)
	if opts.Keys > 0 && opts.Height > 0 {
		a.takeSnapshot()
	}
	return a
}

// Serialize returns the canonical serialisation of data.
func Serialize(data map[string][]byte) []byte {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	var n [binary.MaxVarintLen64]byte
	for _, k := range keys {
		buf.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
		buf.WriteString(k)
		v := data[k]
		buf.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
		buf.Write(v)
	}
	return buf.Bytes()
}

// Hash is the app hash of data.
func Hash(data map[string][]byte) []byte {
	h := sha256.Sum256(Serialize(data))
	return h[:]
}

func parse(b []byte) (map[string][]byte, error) {
	out := make(map[string][]byte)
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		kl, err := binary.ReadUvarint(r)
		if err != nil || kl > uint64(r.Len()) {
			return nil, errors.New("bad key length")
		}
		k := make([]byte, kl)
		_, _ = r.Read(k)
		vl, err := binary.ReadUvarint(r)
		if err != nil || vl > uint64(r.Len()) {
			return nil, errors.New("bad value length")
		}
		v := make([]byte, vl)
		_, _ = r.Read(v)
		out[string(k)] = v
	}
	return out, nil
}

// takeSnapshot snapshots the current state at the current height.
func (a *App) takeSnapshot() {
	ser := Serialize(a.data)
	var chunks [][]byte
	var meta []byte
	for off := 0; off < len(ser) || off == 0; off += a.chunkSize {
		end := min(off+a.chunkSize, len(ser))
		c := ser[off:end]
		chunks = append(chunks, c)
		sum := sha256.Sum256(c)
		meta = append(meta, sum[:]...)
		if end == len(ser) {
			break
		}
	}
	h := sha256.Sum256(meta)
	a.snapshots = append(a.snapshots, &stored{
		snap:   &abci.Snapshot{Height: uint64(a.height), Format: Format, Chunks: uint32(len(chunks)), Hash: h[:], Metadata: meta},
		chunks: chunks,
	})
}

// AppHash returns the current app hash.
func (a *App) AppHash() []byte {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return append([]byte(nil), a.appHash...)
}

// Height returns the height of the current state.
func (a *App) Height() int64 {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.height
}

// Data returns a copy of the state.
func (a *App) Data() map[string][]byte {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	out := make(map[string][]byte, len(a.data))
	for k, v := range a.data {
		out[k] = v
	}
	return out
}

// Snapshot returns the app's snapshot at height, or nil.
func (a *App) Snapshot(height uint64) *abci.Snapshot {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	for _, s := range a.snapshots {
		if s.snap.Height == height {
			return s.snap
		}
	}
	return nil
}

// Misbehave changes the knobs under the lock.
func (a *App) Misbehave(f func(k *Knobs)) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	f(&a.knobs)
}

// OnApply registers a hook called (outside the lock) after every accepted
// chunk.
func (a *App) OnApply(f func(index uint32)) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.onApply = f
}

// Offers returns how many snapshots were offered.
func (a *App) Offers() int {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.offers
}

// Applied returns the indexes of accepted chunks, in order.
func (a *App) Applied() []uint32 {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return append([]uint32(nil), a.applied...)
}

// Info implements abci.Application.
func (a *App) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return &abci.ResponseInfo{
		Data: "kvapp", AppVersion: a.appVersion, LastBlockHeight: a.height,
		LastBlockAppHash: append([]byte(nil), a.appHash...),
	}, nil
}

// ListSnapshots implements abci.Application.
func (a *App) ListSnapshots(context.Context, *abci.RequestListSnapshots) (*abci.ResponseListSnapshots, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	out := &abci.ResponseListSnapshots{}
	for _, s := range a.snapshots {
		out.Snapshots = append(out.Snapshots, s.snap)
	}
	return out, nil
}

// LoadSnapshotChunk implements abci.Application.
func (a *App) LoadSnapshotChunk(ctx context.Context, req *abci.RequestLoadSnapshotChunk) (*abci.ResponseLoadSnapshotChunk, error) {
	a.mtx.Lock()
	gate := a.knobs.LoadGate
	a.mtx.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if a.knobs.MissingChunks[req.Chunk] {
		return &abci.ResponseLoadSnapshotChunk{}, nil
	}
	for _, s := range a.snapshots {
		if s.snap.Height == req.Height && s.snap.Format == req.Format && req.Chunk < s.snap.Chunks {
			c := s.chunks[req.Chunk]
			if a.knobs.CorruptChunks[req.Chunk] {
				c = append([]byte(nil), c...)
				c[0] ^= 0xff
			}
			return &abci.ResponseLoadSnapshotChunk{Chunk: c}, nil
		}
	}
	return &abci.ResponseLoadSnapshotChunk{}, nil
}

// OfferSnapshot implements abci.Application.
func (a *App) OfferSnapshot(_ context.Context, req *abci.RequestOfferSnapshot) (*abci.ResponseOfferSnapshot, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	a.offers++
	if len(a.knobs.OfferResults) > 0 {
		res := a.knobs.OfferResults[0]
		a.knobs.OfferResults = a.knobs.OfferResults[1:]
		if res != abci.ResponseOfferSnapshot_ACCEPT {
			return &abci.ResponseOfferSnapshot{Result: res}, nil
		}
	}
	s := req.Snapshot
	if s == nil {
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT}, nil
	}
	if s.Format != Format || (a.knobs.RejectFormat != nil && *a.knobs.RejectFormat == s.Format) {
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT_FORMAT}, nil
	}
	sum := sha256.Sum256(s.Metadata)
	if len(s.Metadata) != 32*int(s.Chunks) || !bytes.Equal(sum[:], s.Hash) {
		return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_REJECT}, nil
	}
	rs := &restoreState{snap: s, appHash: req.AppHash, hasher: sha256.New()}
	for i := 0; i < int(s.Chunks); i++ {
		rs.checksum = append(rs.checksum, s.Metadata[32*i:32*i+32])
	}
	a.restore = rs
	return &abci.ResponseOfferSnapshot{Result: abci.ResponseOfferSnapshot_ACCEPT}, nil
}

// ApplySnapshotChunk implements abci.Application.
func (a *App) ApplySnapshotChunk(_ context.Context, req *abci.RequestApplySnapshotChunk) (*abci.ResponseApplySnapshotChunk, error) {
	a.mtx.Lock()
	if q := a.knobs.ApplyResults[req.Index]; len(q) > 0 {
		res := q[0]
		a.knobs.ApplyResults[req.Index] = q[1:]
		a.mtx.Unlock()
		return &res, nil
	}
	rs := a.restore
	if rs == nil {
		a.mtx.Unlock()
		return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ABORT}, nil
	}
	if req.Index != rs.next {
		// Re-applying from an earlier index (RETRY_SNAPSHOT / refetch):
		// restart the stream there if it is 0, else out of order.
		if req.Index != 0 {
			a.mtx.Unlock()
			return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT}, nil
		}
		rs.next, rs.buf = 0, bytes.Buffer{}
		rs.hasher = sha256.New()
	}
	sum := sha256.Sum256(req.Chunk)
	if !bytes.Equal(sum[:], rs.checksum[req.Index]) {
		a.mtx.Unlock()
		return &abci.ResponseApplySnapshotChunk{
			Result: abci.ResponseApplySnapshotChunk_RETRY, RefetchChunks: []uint32{req.Index},
			RejectSenders: []string{req.Sender},
		}, nil
	}
	rs.buf.Write(req.Chunk)
	rs.hasher.Write(req.Chunk)
	rs.next++
	a.applied = append(a.applied, req.Index)
	if rs.next == rs.snap.Chunks {
		data, err := parse(rs.buf.Bytes())
		if err != nil {
			a.mtx.Unlock()
			return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_REJECT_SNAPSHOT}, nil
		}
		a.data = data
		a.height = int64(rs.snap.Height)
		a.appHash = rs.hasher.Sum(nil)
		a.restore = nil
	}
	hook := a.onApply
	a.mtx.Unlock()
	if hook != nil {
		hook(req.Index)
	}
	return &abci.ResponseApplySnapshotChunk{Result: abci.ResponseApplySnapshotChunk_ACCEPT}, nil
}
