// Package kvapp is an in-process ABCI application (CometBFT v0.40) for
// tests, benchmarks and the demo: a state that really snapshots and
// restores, that can run on a live chain, and that can be told to
// misbehave.
//
// # State and app hash
//
// Key-value mode (the default): the state is a sorted key/value map. Its
// canonical serialisation is, per key in order, uvarint(len(k)) k
// uvarint(len(v)) v; the app hash is the SHA-256 of that serialisation.
// Options{Keys, ValueSize, Seed} generates Keys keys "key-%08d" with
// ValueSize pseudo-random bytes each, deterministically from Seed; the
// state does not depend on the height.
//
// Streaming mode (Options.StreamBytes > 0), for benchmarks with states of
// gigabytes: the state is a pseudo-random byte stream of StreamBytes bytes,
// chunk i generated from (Seed, i) alone, and the app hash is the SHA-256
// of the stream. The serving app generates each chunk when it is loaded;
// the restoring app verifies and hashes each chunk as it is applied and
// keeps only the digest. Neither ever holds the whole state. The app hash
// is the SHA-256 of "kvapp-stream", the SHA-256 of every chunk in order,
// and uvarint(StreamBytes): each byte is hashed once, by the per-chunk
// check, and the hash depends on ChunkSize too. A serving app computes the
// chunk hashes once per process for equal (Seed, StreamBytes, ChunkSize),
// on every CPU (about 1.5 s of CPU per GiB). A streaming app accepts no
// transactions.
//
// # Snapshots
//
// A snapshot is the canonical state (serialisation or stream) cut every
// ChunkSize bytes (default 64 KiB). Its metadata is one kind byte ('K' for
// key-value, 'S' for stream) followed by the SHA-256 of every chunk; its
// hash is the SHA-256 of the metadata. Metadata therefore grows by 32 bytes
// per chunk: keep snapshots under about 2000 chunks to stay within the
// 64 KiB metadata limit of the wire protocol.
//
// The restoring app (any App, typically New(Options{})) accepts an offered
// snapshot whose format it supports (Options.Formats, default {Format})
// and whose metadata is consistent, then checks every applied chunk
// against the metadata: a corrupt chunk is answered RETRY with
// RefetchChunks=[i] and RejectSenders=[sender]. Chunks must come in index
// order; re-applying an already applied chunk with the right content is
// accepted again without effect; a chunk beyond the next expected one is
// answered REJECT_SNAPSHOT. After the last chunk the app checks the app
// hash against the trusted one of the offer (when given), and answers
// REJECT_SNAPSHOT on mismatch; otherwise the state is installed and Info
// reports the snapshot height and the app hash.
//
// # Live chains
//
// On a CometBFT chain the app applies transactions "key=value" in
// FinalizeBlock (returning the new app hash), makes them durable in
// Commit, and with SnapshotInterval > 0 takes a snapshot at every multiple
// of it, keeping the last SnapshotKeep. Query reads a key (in Data, or the
// path "/key"). Everything is deterministic.
//
// # Misbehaviour and observation
//
// Misbehave changes the Knobs under the app's lock; tests may call it at
// any time, also while the app is in use. Counters (Stats, Offers,
// Applied), the OnApply hook, Changed and the Wait* helpers let tests wait
// for events instead of sleeping.
package kvapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"

	abci "github.com/cometbft/cometbft/abci/types"
)

// Format is the snapshot format the app produces, and the only one it
// accepts, unless Options say otherwise.
const Format uint32 = 1

// Transaction result codes.
const (
	CodeOK       uint32 = abci.CodeTypeOK
	CodeBadTx    uint32 = 1 // not of the form key=value with a non-empty key
	CodeReadOnly uint32 = 2 // a streaming app accepts no transactions
)

// Options describe the app.
type Options struct {
	Keys      int   // number of generated keys (key-value mode)
	ValueSize int   // bytes per generated value
	Seed      int64 // makes the content deterministic
	// StreamBytes > 0 selects streaming mode: the state is this many
	// pseudo-random bytes (Keys and ValueSize are ignored).
	StreamBytes int64
	// Height is the height of the generated state. With content (Keys or
	// StreamBytes > 0) and Height > 0, New takes a snapshot at Height.
	Height     int64
	ChunkSize  int      // snapshot chunk size (default 64 KiB)
	Format     uint32   // format of the snapshots the app takes (default Format)
	Formats    []uint32 // formats OfferSnapshot accepts (default: {Format})
	AppVersion uint64   // reported by Info (default 1)
	// SnapshotInterval > 0 makes Commit take a snapshot at every height
	// that is a multiple of it, keeping the last SnapshotKeep (default 10).
	SnapshotInterval int64
	SnapshotKeep     int
	// Dir, if set, makes the committed state durable (key-value mode): it
	// is written to a file in Dir after every Commit and restore, and New
	// starts from it when present, as a real app restarts from its disk.
	Dir string
}

// App is the application. Safe for concurrent use.
type App struct {
	abci.BaseApplication

	opts Options

	mtx       sync.Mutex
	data      map[string][]byte // key-value mode
	streamed  bool              // streaming mode: the state is a stream
	stream    *stream           // the generated stream (nil once restored: only size and hash are known)
	size      int64             // bytes of the canonical state
	height    int64
	appHash   []byte
	pending   *block // finalized, not committed
	snapshots []*stored
	restore   *restoreState

	knobs   Knobs
	stats   Stats
	applied []uint32
	onApply func(index uint32)
	changed chan struct{}
}

type block struct {
	height  int64
	data    map[string][]byte
	size    int64
	appHash []byte
}

// New returns an app holding the state opts describe and, if it has
// content and opts.Height > 0, a snapshot of it at opts.Height. New(Options{})
// is an empty app, ready to be restored or to start a chain.
func New(opts Options) *App {
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 64 << 10
	}
	if opts.AppVersion == 0 {
		opts.AppVersion = 1
	}
	if opts.Format == 0 {
		opts.Format = Format
	}
	if len(opts.Formats) == 0 {
		opts.Formats = []uint32{Format}
	}
	if opts.SnapshotKeep <= 0 {
		opts.SnapshotKeep = 10
	}
	a := &App{opts: opts, data: map[string][]byte{}, height: opts.Height, changed: make(chan struct{})}
	content := false
	if opts.StreamBytes > 0 {
		s := stream{seed: opts.Seed, size: opts.StreamBytes, chunkSize: opts.ChunkSize}
		a.stream, a.streamed, a.data = &s, true, nil
		a.size, a.appHash = s.size, s.digest().appHash
		content = true
	} else {
		rng := rand.New(rand.NewSource(opts.Seed))
		for i := 0; i < opts.Keys; i++ {
			v := make([]byte, opts.ValueSize)
			rng.Read(v)
			a.data[fmt.Sprintf("key-%08d", i)] = v
		}
		ser := Serialize(a.data)
		sum := sha256.Sum256(ser)
		a.size, a.appHash = int64(len(ser)), sum[:]
		content = opts.Keys > 0
	}
	if content && opts.Height > 0 {
		a.addSnapshot(uint64(opts.Height), opts.Format)
	}
	if opts.Dir != "" && !a.streamed {
		if err := a.load(); err != nil {
			panic(err)
		}
	}
	return a
}

// Serialize returns the canonical serialisation of a key-value state.
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

// Hash is the app hash of a key-value state.
func Hash(data map[string][]byte) []byte {
	h := sha256.Sum256(Serialize(data))
	return h[:]
}

var errTruncated = errors.New("kvapp: truncated serialisation")

// parse decodes a canonical serialisation.
func parse(b []byte) (map[string][]byte, error) {
	out := make(map[string][]byte)
	r := bytes.NewReader(b)
	next := func() ([]byte, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return nil, errTruncated
		}
		v := make([]byte, n)
		_, _ = r.Read(v)
		return v, nil
	}
	for r.Len() > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		out[string(k)] = v
	}
	return out, nil
}

// notify wakes every waiter of Changed. Caller holds a.mtx.
func (a *App) notify() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// AppHash returns the app hash of the committed state.
func (a *App) AppHash() []byte {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return append([]byte(nil), a.appHash...)
}

// Height returns the height of the committed state.
func (a *App) Height() int64 {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.height
}

// Size returns the size in bytes of the canonical state (the serialisation,
// or the stream).
func (a *App) Size() int64 {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.size
}

// Streaming reports whether the app is in streaming mode (generated or
// restored from a stream snapshot).
func (a *App) Streaming() bool {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return a.streamed
}

// Data returns a copy of the committed key-value state (nil in streaming
// mode).
func (a *App) Data() map[string][]byte {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if a.data == nil {
		return nil
	}
	out := make(map[string][]byte, len(a.data))
	for k, v := range a.data {
		out[k] = v
	}
	return out
}

// Get returns the committed value of key.
func (a *App) Get(key string) ([]byte, bool) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	v, ok := a.data[key]
	return v, ok
}

// Info implements abci.Application.
func (a *App) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mtx.Lock()
	res := &abci.ResponseInfo{
		Data: "kvapp", Version: "1", AppVersion: a.opts.AppVersion,
		LastBlockHeight: a.height, LastBlockAppHash: append([]byte(nil), a.appHash...),
	}
	override := a.knobs.InfoOverride
	a.mtx.Unlock()
	if override != nil {
		override(res)
	}
	return res, nil
}

// parseTx splits "key=value".
func parseTx(tx []byte) (key, value []byte, ok bool) {
	k, v, found := bytes.Cut(tx, []byte("="))
	if !found || len(k) == 0 {
		return nil, nil, false
	}
	return k, v, true
}

// CheckTx implements abci.Application: accepts "key=value".
func (a *App) CheckTx(_ context.Context, req *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	if a.Streaming() {
		return &abci.ResponseCheckTx{Code: CodeReadOnly, Log: "streaming app accepts no transactions"}, nil
	}
	if _, _, ok := parseTx(req.Tx); !ok {
		return &abci.ResponseCheckTx{Code: CodeBadTx, Log: "want key=value"}, nil
	}
	return &abci.ResponseCheckTx{Code: CodeOK}, nil
}

// InitChain implements abci.Application. The app keeps its state (empty,
// or generated) and returns its hash: a genesis app_hash must be empty or
// equal to it.
func (a *App) InitChain(context.Context, *abci.RequestInitChain) (*abci.ResponseInitChain, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	return &abci.ResponseInitChain{AppHash: append([]byte(nil), a.appHash...)}, nil
}

// FinalizeBlock implements abci.Application: applies the block's
// "key=value" transactions in order to a copy of the state and returns
// its hash. The state becomes current at Commit.
func (a *App) FinalizeBlock(_ context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseFinalizeBlock{TxResults: make([]*abci.ExecTxResult, len(req.Txs))}
	b := &block{height: req.Height, data: a.data, size: a.size, appHash: a.appHash}
	copied := false
	for i, tx := range req.Txs {
		k, v, ok := parseTx(tx)
		switch {
		case a.streamed:
			res.TxResults[i] = &abci.ExecTxResult{Code: CodeReadOnly, Log: "streaming app accepts no transactions"}
			continue
		case !ok:
			res.TxResults[i] = &abci.ExecTxResult{Code: CodeBadTx, Log: "want key=value"}
			continue
		}
		if !copied {
			b.data = make(map[string][]byte, len(a.data)+len(req.Txs))
			for key, val := range a.data {
				b.data[key] = val
			}
			copied = true
		}
		b.data[string(k)] = append([]byte(nil), v...)
		res.TxResults[i] = &abci.ExecTxResult{Code: CodeOK}
	}
	if copied {
		ser := Serialize(b.data)
		sum := sha256.Sum256(ser)
		b.size, b.appHash = int64(len(ser)), sum[:]
	}
	a.pending = b
	res.AppHash = append([]byte(nil), b.appHash...)
	return res, nil
}

// Commit implements abci.Application: makes the finalized block's state
// current and takes a snapshot if the height is a multiple of
// SnapshotInterval.
func (a *App) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	a.mtx.Lock()
	defer a.mtx.Unlock()
	if b := a.pending; b != nil {
		a.pending = nil
		a.data, a.size, a.appHash, a.height = b.data, b.size, b.appHash, b.height
		a.persist()
		a.stats.Commits++
		if iv := a.opts.SnapshotInterval; iv > 0 && b.height%iv == 0 {
			a.addSnapshot(uint64(b.height), a.opts.Format)
			a.prune(a.opts.SnapshotKeep)
		}
		a.notify()
	}
	return &abci.ResponseCommit{}, nil
}

// Query implements abci.Application: the value of the key in Data (or,
// with an empty Data, in the path "/<key>").
func (a *App) Query(_ context.Context, req *abci.RequestQuery) (*abci.ResponseQuery, error) {
	key := req.Data
	if len(key) == 0 {
		key = []byte(strings.TrimPrefix(req.Path, "/"))
	}
	a.mtx.Lock()
	defer a.mtx.Unlock()
	res := &abci.ResponseQuery{Key: key, Height: a.height}
	if v, ok := a.data[string(key)]; ok {
		res.Value, res.Log = append([]byte(nil), v...), "exists"
	} else {
		res.Log = "does not exist"
	}
	return res, nil
}
