package statesync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cometbft/cometbft/p2p"
)

// Spool layout. Each snapshot gets a directory named after its height,
// format and key (which covers the hash, chunk count and metadata) under
// temp_dir; each chunk is one file named by its index:
//
//	magic "SSC1" | index u32 | length u32 | crc32c(chunk) u32 | sender length u16 | sender | chunk
//
// written to a temporary name and renamed, so a crash leaves either no
// file or a whole one; a torn or corrupted file (a crash of the machine
// before the data reached the disk) fails the length check when the spool
// is opened, or the checksum when the chunk is read, and is fetched again.
const (
	spoolPrefix     = "statesync-spool-"
	spoolMagic      = "SSC1"
	spoolHeaderSize = 4 + 4 + 4 + 4 + 2
	spoolLockName   = "LOCK"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errSpoolCorrupt means a spooled chunk failed its checks; it is fetched
// again.
var errSpoolCorrupt = errors.New("spooled chunk is corrupt")

// chunkSpool is one snapshot's fetched chunks on disk, with each chunk's
// sender. It survives a crash: a Sync that chooses the same snapshot again
// (after a restart) reopens it and applies what it holds instead of
// fetching it. The restore loop owns the bookkeeping (have, sender,
// bytes); the files are written and removed only by the attempt's writer
// goroutine and read by its applier, never by the loop. Not safe for
// concurrent use.
type chunkSpool struct {
	dir    string
	lock   io.Closer // held while open, so no other Sync deletes it
	have   []bool
	sender []p2p.ID
	size   []int64
	count  uint32 // chunks on disk
	bytes  int64  // bytes on disk (chunk data)
}

// spoolDir returns the spool directory of s under tempDir.
func spoolDir(tempDir string, s *snapshot) string {
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	return filepath.Join(tempDir, fmt.Sprintf("%s%d-%d-%x", spoolPrefix, s.Height, s.Format, s.key[:12]))
}

// openChunkSpool opens (or creates) the spool of s under tempDir (the OS
// temporary directory when empty), keeping every whole chunk found there,
// and deletes the spools of other snapshots that no running Sync holds.
func openChunkSpool(tempDir string, s *snapshot) (*chunkSpool, error) {
	dir := spoolDir(tempDir, s)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating chunk spool directory: %w", err)
	}
	lock, err := lockSpool(filepath.Join(dir, spoolLockName))
	if err != nil {
		return nil, fmt.Errorf("locking chunk spool %s: %w", dir, err)
	}
	q := &chunkSpool{
		dir:    dir,
		lock:   lock,
		have:   make([]bool, s.Chunks),
		sender: make([]p2p.ID, s.Chunks),
		size:   make([]int64, s.Chunks),
	}
	q.load(s.Chunks)
	removeStaleSpools(filepath.Dir(dir), dir)
	return q, nil
}

// load records the whole chunks already in the directory and removes the
// rest (temporary files, torn files, out-of-range indexes).
func (q *chunkSpool) load(n uint32) {
	entries, err := os.ReadDir(q.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if name == spoolLockName {
			continue
		}
		path := filepath.Join(q.dir, name)
		index, err := strconv.ParseUint(name, 10, 32)
		if err != nil || uint32(index) >= n {
			_ = os.Remove(path)
			continue
		}
		sender, size, err := readSpoolHeader(path, uint32(index))
		if err != nil {
			_ = os.Remove(path)
			continue
		}
		q.mark(uint32(index), sender, size)
	}
}

// removeStaleSpools deletes the spools under root other than keep that no
// running Sync holds (their lock can be taken).
func removeStaleSpools(root, keep string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(root, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), spoolPrefix) || path == keep {
			continue
		}
		lock, err := lockSpool(filepath.Join(path, spoolLockName))
		if err != nil {
			continue // in use by another Sync
		}
		_ = os.RemoveAll(path)
		_ = lock.Close()
	}
}

func (q *chunkSpool) n() uint32 { return uint32(len(q.have)) }

func (q *chunkSpool) path(index uint32) string {
	return filepath.Join(q.dir, strconv.FormatUint(uint64(index), 10))
}

// has reports whether chunk index is on disk.
func (q *chunkSpool) has(index uint32) bool {
	return index < q.n() && q.have[index]
}

// mark records that chunk index of size bytes from sender is on disk.
func (q *chunkSpool) mark(index uint32, sender p2p.ID, size int64) {
	if index >= q.n() || q.have[index] {
		return
	}
	q.have[index], q.sender[index], q.size[index] = true, sender, size
	q.count++
	q.bytes += size
}

// unmark forgets chunk index (its file is to be removed); it returns
// whether it was on disk.
func (q *chunkSpool) unmark(index uint32) bool {
	if !q.has(index) {
		return false
	}
	q.bytes -= q.size[index]
	q.have[index], q.sender[index], q.size[index] = false, "", 0
	q.count--
	return true
}

// senderOf returns who sent chunk index ("" if not on disk).
func (q *chunkSpool) senderOf(index uint32) p2p.ID {
	if !q.has(index) {
		return ""
	}
	return q.sender[index]
}

// fromSender returns the indexes >= from on disk that peer sent.
func (q *chunkSpool) fromSender(peer p2p.ID, from uint32) []uint32 {
	var out []uint32
	for i := from; i < q.n(); i++ {
		if q.have[i] && q.sender[i] == peer {
			out = append(out, i)
		}
	}
	return out
}

// senders returns every peer that sent a chunk on disk.
func (q *chunkSpool) senders() []p2p.ID {
	seen := make(map[p2p.ID]struct{})
	var out []p2p.ID
	for i, ok := range q.have {
		if _, dup := seen[q.sender[i]]; ok && !dup && q.sender[i] != "" {
			seen[q.sender[i]] = struct{}{}
			out = append(out, q.sender[i])
		}
	}
	return out
}

// remove deletes the spool directory and releases it.
func (q *chunkSpool) remove() error {
	err := os.RemoveAll(q.dir)
	q.release()
	return err
}

// release closes the spool and leaves it on disk (to resume after a
// restart).
func (q *chunkSpool) release() {
	if q.lock != nil {
		_ = q.lock.Close()
		q.lock = nil
	}
}

// writeSpoolFile writes one chunk file atomically (temporary name, then
// rename). Called by the writer goroutine only.
func writeSpoolFile(path string, index uint32, data []byte, sender p2p.ID) error {
	if len(sender) > 0xFFFF {
		sender = sender[:0xFFFF]
	}
	hdr := make([]byte, spoolHeaderSize, spoolHeaderSize+len(sender))
	copy(hdr, spoolMagic)
	binary.BigEndian.PutUint32(hdr[4:], index)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(data)))
	binary.BigEndian.PutUint32(hdr[12:], crc32.Checksum(data, crcTable))
	binary.BigEndian.PutUint16(hdr[16:], uint16(len(sender)))
	hdr = append(hdr, sender...)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(hdr)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// readSpoolHeader checks a chunk file's header and length against its
// size, and returns its sender and chunk size.
func readSpoolHeader(path string, index uint32) (p2p.ID, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	var hdr [spoolHeaderSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return "", 0, errSpoolCorrupt
	}
	sender := make([]byte, binary.BigEndian.Uint16(hdr[16:]))
	if _, err := io.ReadFull(f, sender); err != nil {
		return "", 0, errSpoolCorrupt
	}
	size := int64(binary.BigEndian.Uint32(hdr[8:]))
	if string(hdr[:4]) != spoolMagic || binary.BigEndian.Uint32(hdr[4:]) != index ||
		info.Size() != spoolHeaderSize+int64(len(sender))+size {
		return "", 0, errSpoolCorrupt
	}
	return p2p.ID(sender), size, nil
}

// readSpoolFile reads and checks one chunk file. Called by the applier.
func readSpoolFile(path string, index uint32) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(raw) < spoolHeaderSize || string(raw[:4]) != spoolMagic || binary.BigEndian.Uint32(raw[4:]) != index {
		return nil, errSpoolCorrupt
	}
	size := int(binary.BigEndian.Uint32(raw[8:]))
	start := spoolHeaderSize + int(binary.BigEndian.Uint16(raw[16:]))
	if len(raw) != start+size {
		return nil, errSpoolCorrupt
	}
	data := raw[start:]
	if crc32.Checksum(data, crcTable) != binary.BigEndian.Uint32(raw[12:]) {
		return nil, errSpoolCorrupt
	}
	return data, nil
}
