package statesync

import (
	"container/list"
	"context"
	"sync"

	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
)

// byteLRU is a least-recently-used cache bounded by the summed size of its
// values. A value larger than the whole budget is not kept. Not safe for
// concurrent use (its owners lock).
type byteLRU[K comparable, V any] struct {
	budget, used int
	order        *list.List // front: most recently used; values are *lruEntry
	items        map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	size int
}

func newByteLRU[K comparable, V any](budget int) *byteLRU[K, V] {
	return &byteLRU[K, V]{budget: budget, order: list.New(), items: make(map[K]*list.Element)}
}

func (c *byteLRU[K, V]) get(k K) (V, bool) {
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (c *byteLRU[K, V]) put(k K, v V, size int) {
	if size > c.budget {
		return
	}
	if e, ok := c.items[k]; ok {
		c.used -= e.Value.(*lruEntry[K, V]).size
		c.order.Remove(e)
		delete(c.items, k)
	}
	for c.used+size > c.budget {
		last := c.order.Back()
		old := last.Value.(*lruEntry[K, V])
		c.used -= old.size
		c.order.Remove(last)
		delete(c.items, old.key)
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v, size: size})
	c.used += size
}

// chunkKey names a snapshot chunk.
type chunkKey struct {
	height uint64
	format uint32
	index  uint32
}

// chunkCache keeps recently loaded snapshot chunks, shared by every peer,
// within ServeChunkCache bytes: peers restoring the same snapshot ask for
// the same chunks at about the same time, and each is then loaded from the
// app about once. A chunk is kept only when it is asked for a second time
// while its key is still remembered (the last seenKeys keys asked for): a
// node serving one restorer, which asks for each chunk once, keeps nothing.
// Concurrent loads of one chunk are merged: later callers wait for the
// first one's result (or their ctx). Only chunks the app returned are
// kept: errors and missing chunks are not cached. Peers cannot choose what
// the app stores, so they cannot fill it with anything but real chunks, and
// the budget bounds what it holds. Safe for concurrent use.
type chunkCache struct {
	mtx      sync.Mutex
	lru      *byteLRU[chunkKey, []byte]
	seen     *byteLRU[chunkKey, struct{}] // keys asked for, one unit each
	inflight map[chunkKey]*chunkLoad
}

// seenKeys is how many chunk keys the cache remembers for admission.
const seenKeys = 4096

type chunkLoad struct {
	done    chan struct{}
	chunk   []byte
	err     error
	waiters int // callers waiting for this load (under chunkCache.mtx)
}

func newChunkCache(budget int) *chunkCache {
	return &chunkCache{
		lru:      newByteLRU[chunkKey, []byte](budget),
		seen:     newByteLRU[chunkKey, struct{}](seenKeys),
		inflight: make(map[chunkKey]*chunkLoad),
	}
}

// load returns the chunk named by k, from the cache or from fn (called at
// most once at a time per key). hit reports whether fn was not called for
// this caller. The returned slice must not be modified.
func (c *chunkCache) load(ctx context.Context, k chunkKey, fn func() ([]byte, error)) (chunk []byte, hit bool, err error) {
	c.mtx.Lock()
	if v, ok := c.lru.get(k); ok {
		c.mtx.Unlock()
		return v, true, nil
	}
	if l, ok := c.inflight[k]; ok {
		l.waiters++
		c.mtx.Unlock()
		select {
		case <-l.done:
			return l.chunk, true, l.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	l := &chunkLoad{done: make(chan struct{})}
	c.inflight[k] = l
	_, again := c.seen.get(k)
	c.seen.put(k, struct{}{}, 1)
	c.mtx.Unlock()

	l.chunk, l.err = fn()
	c.mtx.Lock()
	delete(c.inflight, k)
	if again && l.err == nil && len(l.chunk) > 0 {
		c.lru.put(k, l.chunk, len(l.chunk))
	}
	c.mtx.Unlock()
	close(l.done)
	return l.chunk, false, l.err
}

// lightCache keeps recently served light blocks by height within
// ServeLightCache bytes (their encoded size). A light block of a committed
// height does not change, so entries need no invalidation; only complete
// light blocks are cached (never "not available" or an error). Concurrent
// loads of one height are merged, as in chunkCache: sixteen peers asking
// for a snapshot's h+1 at once cost one LoadValidators. Cached values are
// shared between responses and must not be modified. Safe for concurrent
// use.
type lightCache struct {
	mtx      sync.Mutex
	lru      *byteLRU[int64, *cmtproto.LightBlock]
	inflight map[int64]*lightLoad
}

type lightLoad struct {
	done chan struct{}
	lb   *cmtproto.LightBlock
	err  error
}

func newLightCache(budget int) *lightCache {
	return &lightCache{lru: newByteLRU[int64, *cmtproto.LightBlock](budget), inflight: make(map[int64]*lightLoad)}
}

// load returns the light block at height from the cache or from fn (called
// at most once at a time per height). loaded reports whether this caller
// ran fn (the others did not pay for the load).
func (c *lightCache) load(height int64, fn func() (*cmtproto.LightBlock, error)) (lb *cmtproto.LightBlock, loaded bool, err error) {
	c.mtx.Lock()
	if v, ok := c.lru.get(height); ok {
		c.mtx.Unlock()
		return v, false, nil
	}
	if l, ok := c.inflight[height]; ok {
		c.mtx.Unlock()
		<-l.done // a store read: bounded, never waits on a peer
		return l.lb, false, l.err
	}
	l := &lightLoad{done: make(chan struct{})}
	c.inflight[height] = l
	c.mtx.Unlock()

	l.lb, l.err = fn()
	c.mtx.Lock()
	delete(c.inflight, height)
	if l.err == nil && l.lb != nil {
		c.lru.put(height, l.lb, l.lb.Size())
	}
	c.mtx.Unlock()
	close(l.done)
	return l.lb, true, l.err
}
