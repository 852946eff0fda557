package statesync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cometbft/cometbft/p2p"
)

// chunkQueue spools one snapshot's chunks to disk under its own directory,
// so memory stays bounded whatever the snapshot size. It remembers who sent
// each chunk (for RejectSenders). Not safe for concurrent use: the syncer
// loop owns it; the applier only reads files whose index it was handed.
type chunkQueue struct {
	dir    string
	have   []bool
	sender []p2p.ID
	count  uint32 // chunks on disk
	bytes  int64  // bytes on disk
}

// newChunkQueue creates a spool directory under tempDir (the OS default when
// empty) for s.
func newChunkQueue(tempDir string, s *snapshot) (*chunkQueue, error) {
	if tempDir != "" {
		if err := os.MkdirAll(tempDir, 0o700); err != nil {
			return nil, fmt.Errorf("creating chunk spool directory: %w", err)
		}
	}
	dir, err := os.MkdirTemp(tempDir, fmt.Sprintf("statesync-%d-%d-", s.Height, s.Format))
	if err != nil {
		return nil, fmt.Errorf("creating chunk spool directory: %w", err)
	}
	return &chunkQueue{
		dir:    dir,
		have:   make([]bool, s.Chunks),
		sender: make([]p2p.ID, s.Chunks),
	}, nil
}

func (q *chunkQueue) size() uint32 { return uint32(len(q.have)) }

func (q *chunkQueue) path(index uint32) string {
	return filepath.Join(q.dir, strconv.FormatUint(uint64(index), 10))
}

// has reports whether chunk index is on disk.
func (q *chunkQueue) has(index uint32) bool {
	return index < q.size() && q.have[index]
}

// put spools a chunk. It returns false without writing if the chunk is
// already on disk. The write is atomic (temp file and rename), so a crash
// never leaves a torn chunk behind.
func (q *chunkQueue) put(index uint32, data []byte, sender p2p.ID) (bool, error) {
	if index >= q.size() {
		return false, fmt.Errorf("chunk index %d out of range (%d chunks)", index, q.size())
	}
	if q.have[index] {
		return false, nil
	}
	tmp := q.path(index) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return false, fmt.Errorf("spooling chunk %d: %w", index, err)
	}
	if err := os.Rename(tmp, q.path(index)); err != nil {
		return false, fmt.Errorf("spooling chunk %d: %w", index, err)
	}
	q.have[index] = true
	q.sender[index] = sender
	q.count++
	q.bytes += int64(len(data))
	return true, nil
}

// load reads a spooled chunk. Safe to call from another goroutine for an
// index that is on disk and not being discarded.
func (q *chunkQueue) load(index uint32) ([]byte, error) {
	return os.ReadFile(q.path(index))
}

// senderOf returns who sent chunk index ("" if not on disk).
func (q *chunkQueue) senderOf(index uint32) p2p.ID {
	if !q.has(index) {
		return ""
	}
	return q.sender[index]
}

// discard deletes chunk index from disk so it is fetched again.
func (q *chunkQueue) discard(index uint32) error {
	if !q.has(index) {
		return nil
	}
	info, statErr := os.Stat(q.path(index))
	if err := os.Remove(q.path(index)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("discarding chunk %d: %w", index, err)
	}
	if statErr == nil {
		q.bytes -= info.Size()
	}
	q.have[index] = false
	q.sender[index] = ""
	q.count--
	return nil
}

// discardSender discards every chunk from peer with index >= from (chunks
// below from are applied already) and returns their indexes.
func (q *chunkQueue) discardSender(peer p2p.ID, from uint32) ([]uint32, error) {
	var out []uint32
	for i := from; i < q.size(); i++ {
		if q.have[i] && q.sender[i] == peer {
			if err := q.discard(i); err != nil {
				return out, err
			}
			out = append(out, i)
		}
	}
	return out, nil
}

// close removes the spool directory and everything in it.
func (q *chunkQueue) close() error {
	return os.RemoveAll(q.dir)
}
