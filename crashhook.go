package statesync

import (
	"os"
	"sync"
	"syscall"
)

// Crash points: where the crash matrix (internal/crashtest) stops a node
// between two steps that no progress event separates.
const (
	crashSeenCommit    = "seen-commit"    // after SaveSeenCommit, before the offline height
	crashOfflineHeight = "offline-height" // after SetOfflineStateSyncHeight, before Bootstrap
	crashBootstrapped  = "bootstrapped"   // after Bootstrap, before Sync returns
	crashBackfill      = "backfill"       // after backfill persisted its first blocks
)

// crashEnv names the crash point (STATESYNC_CRASH_AT) and what happens
// there (STATESYNC_CRASH_MODE): "kill" (default) kills the process with
// SIGKILL, "stop" sends it SIGTERM (a graceful stop, as an operator's).
// Unset, crashPoint does nothing. It exists for the crash matrix only.
var crashEnv = sync.OnceValues(func() (string, string) {
	return os.Getenv("STATESYNC_CRASH_AT"), os.Getenv("STATESYNC_CRASH_MODE")
})

// crashPoint kills or stops the process at point when the environment
// asks for it (see crashEnv).
func crashPoint(point string) {
	at, mode := crashEnv()
	if at == "" || at != point {
		return
	}
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		return
	}
	if mode == "stop" {
		_ = self.Signal(syscall.SIGTERM)
		return
	}
	_ = self.Kill()
	select {} // SIGKILL is on its way
}

// crashBackfillAfter is how many blocks backfill stores before the
// crashBackfill point: few enough that the crash lands mid-run on a small
// test chain.
const crashBackfillAfter = 3

// crashArmed reports whether the environment asks to crash at point.
func crashArmed(point string) bool {
	at, _ := crashEnv()
	return at != "" && at == point
}
