package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/node"
)

// syncBuffer is a bytes.Buffer safe for the node's logging goroutines.
type syncBuffer struct {
	mtx sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.String()
}

// TestFailedStateSyncLogsNoUnstartedServices: a node whose state sync
// fails stops without CometBFT's "Not stopping State service -- has not
// been started yet" errors (its consensus state never started); the log
// has the cause.
func TestFailedStateSyncLogsNoUnstartedServices(t *testing.T) {
	var logs syncBuffer
	err := wait(t, start(t, newHome(t, syncKeys), make(chan os.Signal), &logs))
	require.ErrorIs(t, err, node.ErrStateSyncFailed)
	require.NotContains(t, logs.String(), "Not stopping")
	require.Contains(t, logs.String(), "Stopping the node")
}

// TestUsage: the usage names every flag of start, including --kvapp-keys,
// and where --home defaults to ($CMTHOME); help exits 0, a bad command
// line 2 with the usage.
func TestUsage(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := cli(args, &stdout, &stderr, func() <-chan os.Signal { return make(chan os.Signal) })
		return code, stdout.String(), stderr.String()
	}
	code, out, _ := run("-h")
	require.Equal(t, 0, code)
	for _, want := range []string{"statesyncd init", "statesyncd start", "--kvapp-keys N", "--kvapp-snapshot-interval N",
		"--proxy_app", "$CMTHOME"} {
		require.Contains(t, out, want)
	}

	code, _, errOut := run()
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Usage:")

	code, _, errOut = run("stat")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "stat"`)

	for _, cmd := range []string{"init", "start"} {
		code, _, errOut = run(cmd, "-h")
		require.Equal(t, 0, code, cmd)
		require.True(t, strings.HasPrefix(errOut, "Usage: statesyncd "+cmd+" "), "%q", errOut)
		require.Contains(t, errOut, "$CMTHOME")
		require.Contains(t, errOut, "-home")
	}
	_, _, errOut = run("start", "-h")
	for _, f := range []string{"-kvapp-keys", "-kvapp-snapshot-interval", "-proxy_app"} {
		require.Contains(t, errOut, "  "+f)
	}

	code, _, errOut = run("init", "--nosuch")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "flag provided but not defined: -nosuch")
	require.Contains(t, errOut, "Usage: statesyncd init")

	code, _, errOut = run("start", "--home", t.TempDir(), "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unexpected arguments ["extra"]`)

	code, _, errOut = run("start", "--kvapp-keys", "many")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `invalid value "many" for flag -kvapp-keys`)
}

// TestInitWritesOurComments: init's config.toml replaces CometBFT's
// comments on the [statesync] keys read differently here, adds each of
// ours once (also when init runs again), and reads back as the defaults.
func TestInitWritesOurComments(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	require.NoError(t, runInit([]string{"--home", home}, io.Discard, io.Discard))
	file := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	toml := string(b)
	section := toml[strings.Index(toml, "\n[statesync]\n"):]
	section = section[:strings.Index(section, "\n[blocksync]")]
	for _, stale := range []string{"(default: 1 minute)", "concurrent chunk fetchers", "(default: 1)"} {
		require.NotContains(t, section, stale)
	}
	for _, oc := range ourComments {
		first, _, _ := strings.Cut(oc.comment, "\n")
		require.Contains(t, section, "# "+first+"\n", oc.key)
		require.Equal(t, 1, strings.Count(section, "\n"+oc.key+" = "), oc.key)
	}
	require.Contains(t, section, "# Accepted for compatibility and unused")
	require.Contains(t, section, "# The ceiling of a chunk request's deadline (default: 10s).")
	for _, key := range []string{"use_p2p", "discovery_timeout", "on_no_snapshot", "chunk_window", "verify_timeout",
		"light_block_timeout", "serve_workers", "serve_per_peer", "serve_queue_per_peer", "backfill", "backfill_window"} {
		require.Equal(t, 1, strings.Count(section, "\n"+key+" = "), key)
	}
	// Each comment sits right above its key.
	require.Contains(t, section, "every peer serving the snapshot gets its own window of chunk_window requests.\nchunk_fetchers = ")
	require.Contains(t, section, "another peer.\nchunk_request_timeout = ")

	_, ss, err := loadConfig(home)
	require.NoError(t, err)
	require.Empty(t, ss.RPCServers)
	ss.RPCServers = nil
	require.Equal(t, statesync.DefaultConfig(), ss)

	require.NoError(t, runInit([]string{"--home", home}, io.Discard, io.Discard))
	again, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, toml, string(again), "a second init changed config.toml")
}

// TestBadDurationNamesTheValue: a malformed duration in config.toml is
// refused with its key and value; a bare number (read as nanoseconds)
// too.
func TestBadDurationNamesTheValue(t *testing.T) {
	for key, c := range map[string]struct{ val, want string }{
		"discovery_timeout":     {`"2x"`, `statesync.discovery_timeout = "2x" is not a duration`},
		"discovery_time":        {`"15q"`, `statesync.discovery_time = "15q" is not a duration`},
		"chunk_request_timeout": {`"abc"`, `statesync.chunk_request_timeout = "abc" is not a duration`},
		"verify_timeout":        {`30`, `statesync.verify_timeout = 30 is a bare number`},
	} {
		_, _, err := loadConfig(newHome(t, map[string]string{key: c.val}))
		require.ErrorContains(t, err, c.want, key)
	}
	_, _, err := loadConfig(newHome(t, map[string]string{"discovery_time": `"15q"`}))
	require.ErrorContains(t, err, `time: unknown unit "q" in duration "15q"`)
	// 0 and proper durations pass.
	_, _, err = loadConfig(newHome(t, map[string]string{"discovery_time": `0`, "verify_timeout": `"45s"`}))
	require.NoError(t, err)
}

// TestProgressLogEveryFiveSeconds: a line on every change of phase, and
// within a phase one every 5 s, from the latest progress when no event
// arrives (a tick).
func TestProgressLogEveryFiveSeconds(t *testing.T) {
	var buf bytes.Buffer
	l := &progressLog{logger: log.NewTMLogger(&buf), every: 5 * time.Second}
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	disc := statesync.Progress{Phase: statesync.PhaseDiscovery, Peers: 3}
	l.event(disc, at(0))  // logged: a new phase
	l.tick(disc, at(1))   // not yet
	l.tick(disc, at(5))   // logged: 5 s without a line
	l.event(disc, at(6))  // not yet
	l.tick(disc, at(9.9)) // not yet
	restore := statesync.Progress{Phase: statesync.PhaseRestore, ChunksTotal: 10, ChunksApplied: 3}
	l.event(restore, at(10)) // logged: a new phase
	restore.ChunksApplied = 4
	l.event(restore, at(14))
	l.tick(restore, at(15)) // logged, with the latest state
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4, buf.String())
	require.Contains(t, lines[0], "State sync: discovery")
	require.Contains(t, lines[1], "State sync: discovery")
	require.Contains(t, lines[2], "applied 3/10")
	require.Contains(t, lines[3], "applied 4/10")
}
