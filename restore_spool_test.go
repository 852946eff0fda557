package statesync

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/kvapp"
)

// spoolDirs lists the chunk spools under dir.
func spoolDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), spoolPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestForgedSnapshotPunished: two peers advertise a forged snapshot (other
// state, same height), which outranks the one honest peer's. The restore
// completes from the honest peer, both forgers are punished (disconnected)
// and the forged snapshot's spool is deleted before the honest one is
// restored. Rejected by the app (its last chunk does not match the trusted
// app hash), or, for an app that does not check, by the verification of
// the restored app against the trusted app hash.
func TestForgedSnapshotPunished(t *testing.T) {
	for _, appChecks := range []bool{true, false} {
		t.Run("app checks "+strconv.FormatBool(appChecks), func(t *testing.T) {
			tn := newTestNet(t, netOpts{keys: 200, chunkSize: 16 << 10,
				serverApp: func(i int) *kvapp.App {
					if i == 2 {
						return nil // honest
					}
					return kvapp.New(kvapp.Options{Keys: 300, ValueSize: 1024, ChunkSize: 16 << 10, Height: 20, Seed: 7})
				}})
			if !appChecks {
				tn.fresh.app.Misbehave(func(k *kvapp.Knobs) { k.SkipAppHashCheck = true })
			}
			tempDir := tn.fresh.reactor.cfg.TempDir
			spoolsAtHonest := make(chan []string, 1)
			tn.fresh.app.OnApply(func(index uint32) {
				if index == 0 && tn.fresh.app.Offers() == 2 {
					select {
					case spoolsAtHonest <- spoolDirs(t, tempDir):
					default:
					}
				}
			})
			res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 40*time.Second)
			require.NoError(t, res.err)
			requireRestored(t, tn, tn.height)
			require.Equal(t, 2, tn.fresh.app.Offers(), "the forged snapshot was tried first")
			require.Len(t, <-spoolsAtHonest, 1, "the forged spool is deleted when rejected")
			waitFor(t, "forgers disconnected", func() bool {
				return !tn.fresh.p2p.Switch.Peers().Has(tn.servers[0].p2p.ID()) &&
					!tn.fresh.p2p.Switch.Peers().Has(tn.servers[1].p2p.ID())
			})
			require.True(t, tn.fresh.p2p.Switch.Peers().Has(tn.servers[2].p2p.ID()), "the honest peer is kept")
			require.Empty(t, spoolDirs(t, tempDir), "nothing left on disk after success")
		})
	}
}

// TestChunkDiskBudget: a snapshot that does not fit in chunk_disk_budget
// fails Sync with ErrDiskBudget naming what it needs, and leaves nothing
// on disk.
func TestChunkDiskBudget(t *testing.T) {
	tn := newTestNet(t, netOpts{keys: 400, chunkSize: 16 << 10, cfg: func(c *Config) {
		c.ChunkDiskBudget = 64 << 10
	}})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.ErrorIs(t, res.err, ErrDiskBudget)
	require.ErrorContains(t, res.err, "chunk_disk_budget is 65536")
	require.Empty(t, spoolDirs(t, tn.fresh.reactor.cfg.TempDir))
}

const (
	crashEnvDir = "STATESYNC_TEST_CRASH_DIR"
	crashAt     = 20 // the child dies while applying this chunk
)

// crashNetOpts is the network of the crash test, the same in the child and
// the parent so that both choose the same snapshot.
func crashNetOpts(dir string) netOpts {
	return netOpts{keys: 400, chunkSize: 8 << 10, cfg: func(c *Config) { c.TempDir = dir }}
}

// TestCrashResumeChild is the child process of TestCrashResume: it restores
// into the given temp_dir and kills itself (SIGKILL) at chunk crashAt.
func TestCrashResumeChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("child process of TestCrashResume")
	}
	tn := newTestNet(t, crashNetOpts(dir))
	tn.fresh.app.OnApply(func(index uint32) {
		if index == crashAt {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	t.Fatalf("the child was not killed: %v", res.err)
}

// TestCrashResume: a restore killed at chunk k (a child process, SIGKILL)
// leaves its spool; a Sync in the same temp_dir chooses the same snapshot,
// applies the chunks found there without fetching them, and leaves nothing
// on disk. A leftover spool of another snapshot is deleted.
func TestCrashResume(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashResumeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "output: %s", out)
	ws, ok := exit.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "child killed: %v\n%s", err, out)

	spools := spoolDirs(t, dir)
	require.Len(t, spools, 1, "the crashed restore's spool is left")
	files, err := os.ReadDir(filepath.Join(dir, spools[0]))
	require.NoError(t, err)
	resumedBytes := int64(0)
	resumed := 0
	for _, f := range files {
		index, err := strconv.ParseUint(f.Name(), 10, 32)
		if err != nil {
			continue
		}
		_, size, err := readSpoolHeader(filepath.Join(dir, spools[0], f.Name()), uint32(index))
		if err == nil {
			resumed++
			resumedBytes += size
		}
	}
	// Chunks 0..crashAt were fetched; at most the memory budget (two
	// chunks), one more taken while under it and the writer's queue were
	// not on disk yet (the bound leaves room for a slow writer).
	require.GreaterOrEqual(t, resumed, crashAt+1-6, "the chunks fetched before the crash are spooled")
	stale := filepath.Join(dir, spoolPrefix+"1-1-00")
	require.NoError(t, os.MkdirAll(stale, 0o700))

	tn := newTestNet(t, crashNetOpts(dir))
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)

	snaps, err := tn.source.ListSnapshots(ctx, &abci.RequestListSnapshots{})
	require.NoError(t, err)
	total := int64(0)
	for i := uint32(0); i < snaps.Snapshots[0].Chunks; i++ {
		c, err := tn.source.LoadSnapshotChunk(ctx, &abci.RequestLoadSnapshotChunk{
			Height: snaps.Snapshots[0].Height, Format: snaps.Snapshots[0].Format, Chunk: i})
		require.NoError(t, err)
		total += int64(len(c.Chunk))
	}
	require.Equal(t, total-resumedBytes, tn.fresh.reactor.Progress().Bytes,
		"only the chunks not spooled before the crash are fetched (%d of %d reused)", resumed, snaps.Snapshots[0].Chunks)
	require.Empty(t, spoolDirs(t, dir), "nothing left on disk after success (the stale spool too)")
}

// TestRestoreHandsNextChunkToApplier: a chunk that arrives when it is the
// next to apply is written to the spool and handed to the applier as it
// is, not read back. From a single peer the chunks arrive in order, so
// most are handed over; the applier reads back fewer chunks than there
// are (it read back every one before the hand-off).
func TestRestoreHandsNextChunkToApplier(t *testing.T) {
	var reads atomic.Int64
	readSpool = func(path string, index uint32) ([]byte, error) {
		reads.Add(1)
		return readSpoolFile(path, index)
	}
	t.Cleanup(func() { readSpool = readSpoolFile })
	tn := newTestNet(t, netOpts{servers: 1, keys: 1000, chunkSize: 16 << 10})
	res := waitSync(t, startSync(syncCtx(t), tn.fresh.reactor), 30*time.Second)
	require.NoError(t, res.err)
	requireRestored(t, tn, tn.height)
	chunks := len(tn.fresh.app.Applied())
	require.Greater(t, chunks, 8, "enough chunks to tell")
	require.Less(t, reads.Load(), int64(chunks)/2, "most chunks handed over, not read back")
}
