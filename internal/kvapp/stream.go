package kvapp

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// A stream is the state of an app in streaming mode: StreamBytes
// pseudo-random bytes, cut in chunks of chunkSize, chunk i generated from
// (seed, i) alone. Nobody ever holds the whole stream: the serving app
// generates a chunk when asked for it, the restoring app hashes what it
// receives and keeps the digest.
type stream struct {
	seed      int64
	size      int64
	chunkSize int
}

func (s stream) chunks() uint32 {
	if s.size == 0 {
		return 1 // a snapshot has at least one (empty) chunk
	}
	return uint32((s.size + int64(s.chunkSize) - 1) / int64(s.chunkSize))
}

// chunk generates chunk i.
func (s stream) chunk(i uint32) []byte {
	off := int64(i) * int64(s.chunkSize)
	n := min(int64(s.chunkSize), s.size-off)
	if n <= 0 {
		return []byte{}
	}
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[0:], uint64(s.seed))
	binary.BigEndian.PutUint64(seed[8:], uint64(i))
	copy(seed[16:], "kvapp-stream")
	buf := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(buf)
	return buf
}

// streamDigest is what a serving app must know about a stream: the hash
// of every chunk (the snapshot metadata) and the app hash.
type streamDigest struct {
	sums    [][]byte
	appHash []byte
}

// streamHasher computes a stream's app hash from its chunk hashes, in
// order: SHA-256 of "kvapp-stream", every chunk's SHA-256, then
// uvarint(size). (So the app hash depends on the chunk size too.) Each byte
// of the stream is hashed once, by the chunk check the restorer does
// anyway.
type streamHasher struct {
	h    hash.Hash
	size int64
}

func newStreamHasher() *streamHasher {
	h := sha256.New()
	h.Write([]byte("kvapp-stream"))
	return &streamHasher{h: h}
}

func (s *streamHasher) add(chunkSum []byte, n int) { s.h.Write(chunkSum); s.size += int64(n) }

func (s *streamHasher) sum() []byte {
	var n [binary.MaxVarintLen64]byte
	s.h.Write(n[:binary.PutUvarint(n[:], uint64(s.size))])
	return s.h.Sum(nil)
}

var (
	streamCacheMtx sync.Mutex
	streamCache    = map[stream]*streamOnce{}
)

type streamOnce struct {
	once sync.Once
	d    *streamDigest
}

// digest computes (once per process for equal streams, so that many
// serving apps cost one pass) the chunk hashes, on every CPU, and the app
// hash.
func (s stream) digest() *streamDigest {
	streamCacheMtx.Lock()
	e, ok := streamCache[s]
	if !ok {
		e = &streamOnce{}
		streamCache[s] = e
	}
	streamCacheMtx.Unlock()
	e.once.Do(func() { e.d = s.compute() })
	return e.d
}

func (s stream) compute() *streamDigest {
	n := s.chunks()
	d := &streamDigest{sums: make([][]byte, n)}
	var next atomic.Uint32
	var wg sync.WaitGroup
	for w := 0; w < max(1, runtime.GOMAXPROCS(0)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				sum := sha256.Sum256(s.chunk(i))
				d.sums[i] = sum[:]
			}
		}()
	}
	wg.Wait()
	h := newStreamHasher()
	for i, sum := range d.sums {
		h.add(sum, int(min(int64(s.chunkSize), s.size-int64(i)*int64(s.chunkSize))))
	}
	d.appHash = h.sum()
	return d
}
