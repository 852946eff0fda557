package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cometbft/cometbft/mempool"
	"github.com/stretchr/testify/require"

	"github.com/statesync/statesync/internal/localnet"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(runChild())
	}
	localnet.VerifyTestMain(m)
}

// A row of the matrix: where the child is stopped, and how.
type row struct {
	phase string
	mode  string // kill (SIGKILL) | stop (graceful: Stop, or SIGTERM at a store write)
}

// libraryPoints are the crash points inside the library (STATESYNC_CRASH_AT);
// the other phases are seen by the child in its progress events.
var libraryPoints = map[string]bool{"seen-commit": true, "offline-height": true, "bootstrapped": true, "backfill": true}

var phases = []string{"discovery", "fetching", "applying", "seen-commit", "offline-height", "bootstrapped",
	"handover", "backfill"}

// result of a row.
type result struct {
	row
	outcome string
	toTip   time.Duration
	err     error
}

// TestCrashMatrix: for every phase, kill (SIGKILL) or stop the child node
// there, restart it in the same home, and require that it reaches and
// follows the tip with the chain's app hash, finishes its backfill, exits
// cleanly on SIGTERM, and leaves no spool.
func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: child processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	net, err := localnet.Start(ctx, localnet.Options{Validators: 2, App: appOpts, TimeoutCommit: 200 * time.Millisecond})
	require.NoError(t, err)
	defer func() { require.NoError(t, net.Stop()) }()
	require.NoError(t, net.WaitHeight(ctx, 7))
	stopTxs := sendTxs(ctx, net)
	defer stopTxs()

	var rows []row
	for _, p := range phases {
		for _, m := range []string{"kill", "stop"} {
			rows = append(rows, row{phase: p, mode: m})
		}
	}
	results := make([]result, len(rows))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, r := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = result{row: r, err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			results[i] = runRow(ctx, t, net, r)
		}()
	}
	wg.Wait()

	table := formatTable(results)
	t.Log("\n" + table)
	if f := os.Getenv("CRASHTEST_TABLE"); f != "" {
		require.NoError(t, os.WriteFile(f, []byte(table), 0o644))
	}
	for _, res := range results {
		require.NoError(t, res.err, "%s/%s", res.phase, res.mode)
	}
}

// sendTxs keeps the app state changing (a transaction every 100 ms), so
// that an app left behind shows in its hash. The returned function stops
// it and waits.
func sendTxs(ctx context.Context, net *localnet.Network) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = net.Nodes[0].CometBFT().Mempool().CheckTx([]byte(fmt.Sprintf("tx%d=%d", i, i)), nil, mempool.TxInfo{})
			}
		}
	}()
	return func() { cancel(); <-done }
}

func formatTable(results []result) string {
	var b strings.Builder
	b.WriteString("| phase | kill/stop | outcome | time to tip |\n|---|---|---|---|\n")
	for _, r := range results {
		outcome, tip := r.outcome, "-"
		if r.err != nil {
			outcome = "FAILED: " + strings.ReplaceAll(r.err.Error(), "|", "/")
		} else {
			tip = r.toTip.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.phase, r.mode, outcome, tip)
	}
	return b.String()
}

// child is a running child process and what it reported.
type child struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mtx    sync.Mutex
	hit    bool
	boot   string
	status status
	lines  chan struct{} // a line arrived (capacity 1)
	done   chan struct{} // stdout closed
}

type status struct {
	height, appHeight int64
	appHash           string
	consensus         bool // block sync caught up and handed over to consensus
	cpTop, cpLowest   int64
	cpDone            bool
	from              int64 // the last backfill run's starting height, -1 if none ended
	backfill          string
}

func startChild(ctx context.Context, env []string) (*child, error) {
	c := &child{lines: make(chan struct{}, 1), done: make(chan struct{})}
	c.cmd = exec.CommandContext(ctx, os.Args[0])
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.parse(sc.Text())
			select {
			case c.lines <- struct{}{}:
			default:
			}
		}
	}()
	return c, nil
}

func (c *child) parse(line string) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
	case f[0] == "HIT":
		c.hit = true
	case f[0] == "BOOT":
		c.boot = strings.TrimPrefix(line, "BOOT ")
	case f[0] == "STATUS":
		kv := map[string]string{}
		for _, p := range f[1:] {
			if k, v, ok := strings.Cut(p, "="); ok {
				kv[k] = v
			}
		}
		num := func(k string) int64 { v, _ := strconv.ParseInt(kv[k], 10, 64); return v }
		_, bf, _ := strings.Cut(line, " bf=")
		c.status = status{height: num("h"), appHeight: num("apph"), appHash: kv["app"], consensus: kv["cs"] == "true",
			cpTop: num("top"), cpLowest: num("lowest"), cpDone: kv["done"] == "true", from: num("from"),
			backfill: bf}
	}
}

func (c *child) snapshot() (status, bool, string) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	return c.status, c.hit, c.boot
}

// wait waits for the process to exit, within d.
func (c *child) wait(d time.Duration) (*os.ProcessState, error) {
	select {
	case <-c.done:
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.done
		_ = c.cmd.Wait()
		return nil, fmt.Errorf("did not exit within %v", d)
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, err
	}
	return c.cmd.ProcessState, nil
}

func runRow(ctx context.Context, t *testing.T, net *localnet.Network, r row) result {
	res := result{row: r}
	home := t.TempDir()
	for _, d := range []string{"config", "data"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			res.err = err
			return res
		}
	}
	if err := net.Genesis.SaveAs(filepath.Join(home, "config", "genesis.json")); err != nil {
		res.err = err
		return res
	}
	p2pAddr, err := localnet.FreeAddress()
	if err != nil {
		res.err = err
		return res
	}
	th, hash, err := net.TrustRoot(1)
	if err != nil {
		res.err = err
		return res
	}
	env := []string{envChild + "=1", envHome + "=" + home, envP2P + "=" + p2pAddr,
		envPeers + "=" + net.PersistentPeers(), fmt.Sprintf("%s=%d:%s", envTrust, th, hash)}

	// Run 1: stopped at the phase.
	crash := []string{envPhase + "=" + r.phase, envMode + "=" + r.mode}
	if libraryPoints[r.phase] {
		crash = []string{"STATESYNC_CRASH_AT=" + r.phase, "STATESYNC_CRASH_MODE=" + r.mode}
	}
	note := ""
	if err := runFirst(ctx, append(append([]string(nil), env...), crash...), r); errors.Is(err, errUpstreamPanic) {
		note = " (the stop panicked in CometBFT v0.40's block sync, a crash)"
	} else if err != nil {
		res.err = fmt.Errorf("run 1: %w%s", err, logTail(home))
		return res
	}
	// Run 2: the same home.
	outcome, toTip, err := runSecond(ctx, net, r, env, home)
	if err != nil {
		res.err = fmt.Errorf("restart: %w%s", err, logTail(home))
		return res
	}
	res.outcome, res.toTip = outcome+note, toTip
	return res
}

func runFirst(ctx context.Context, env []string, r row) error {
	c, err := startChild(ctx, env)
	if err != nil {
		return err
	}
	ps, err := c.wait(60 * time.Second)
	if err != nil {
		return err
	}
	_, hit, _ := c.snapshot()
	if !hit && !libraryPoints[r.phase] {
		return fmt.Errorf("phase %s not reached (exit %v): %s", r.phase, ps, c.stderr.String())
	}
	ws := ps.Sys().(syscall.WaitStatus)
	switch r.mode {
	case "kill":
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			return fmt.Errorf("not killed at %s: %v: %s", r.phase, ps, c.stderr.String())
		}
	case "stop":
		switch {
		case ps.ExitCode() == 0:
		case strings.Contains(c.stderr.String(), "blocksync.(*BlockPool).PopRequest"):
			// CometBFT v0.40's block sync, stopped mid-block, can panic
			// (a race of its own): the stop became a crash.
			return errUpstreamPanic
		default:
			return fmt.Errorf("graceful stop at %s failed: %v: %s", r.phase, ps, c.stderr.String())
		}
	}
	return nil
}

// errUpstreamPanic: a graceful stop ended in CometBFT's block sync panic.
var errUpstreamPanic = errors.New("stop panicked in CometBFT's block sync")

// runSecond restarts the child and waits until it follows the tip with the
// chain's app hash, runs consensus, and its backfill is done; then stops it
// with SIGTERM.
func runSecond(ctx context.Context, net *localnet.Network, r row, env []string, home string) (string, time.Duration, error) {
	start := time.Now()
	tip := net.Height()
	c, err := startChild(ctx, env)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		_, _ = c.wait(20 * time.Second)
	}()
	var toTip time.Duration
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case <-c.lines:
		case <-c.done:
			return "", 0, fmt.Errorf("the node exited: %s", c.stderr.String())
		case <-deadline.C:
			s, _, _ := c.snapshot()
			return "", 0, fmt.Errorf("no tip within 60 s (tip %d, status %+v)", tip, s)
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
		s, _, boot := c.snapshot()
		if toTip == 0 && s.height >= tip+2 && appHashMatches(net, s) {
			toTip = time.Since(start)
		}
		// Stopped only once in consensus (CometBFT v0.40's block sync can
		// panic when stopped mid-block: BlockPool.PopRequest reads a block
		// its stopping requester dropped, a race of its own) and once the
		// backfill checkpoint says every height down to 1 is stored.
		if strings.HasPrefix(s.backfill, "failed") {
			return "", 0, fmt.Errorf("backfill %s", s.backfill)
		}
		if toTip == 0 || !s.consensus || !s.cpDone || s.cpLowest != 1 {
			continue
		}
		if err := noSpool(home); err != nil {
			return "", 0, err
		}
		outcome := "block sync from the stores"
		if strings.Contains(boot, "sync=true") {
			outcome = "state-synced again"
		}
		bf, err := backfillOutcome(r, s)
		if err != nil {
			return "", 0, err
		}
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return "", 0, err
		}
		ps, err := c.wait(20 * time.Second)
		if err != nil {
			return "", 0, fmt.Errorf("SIGTERM: %w", err)
		}
		if ps.ExitCode() != 0 {
			return "", 0, fmt.Errorf("exit status %d after SIGTERM: %s", ps.ExitCode(), c.stderr.String())
		}
		return outcome + ", " + bf, toTip, nil
	}
}

// backfillOutcome says where the restarted node's backfill started: a
// killed backfill must be continued below where it stopped, not redone.
func backfillOutcome(r row, s status) (string, error) {
	switch {
	case s.from < 0:
		return "backfill had completed before the stop", nil
	case s.from < s.cpTop:
		return fmt.Sprintf("backfill resumed at %d (synced at %d)", s.from, s.cpTop), nil
	case r.phase == "backfill" && r.mode == "kill":
		return "", fmt.Errorf("backfill killed after %d blocks was redone from %d", 3, s.from)
	}
	return fmt.Sprintf("backfill from %d", s.from), nil
}

// appHashMatches: the child's app hash is the one the chain's next header
// carries for the child's app height.
func appHashMatches(net *localnet.Network, s status) bool {
	if s.appHeight <= 0 {
		return false
	}
	meta := net.Nodes[0].BlockStore().LoadBlockMeta(s.appHeight + 1)
	return meta != nil && fmt.Sprintf("%X", []byte(meta.Header.AppHash)) == s.appHash
}

func noSpool(home string) error {
	entries, err := os.ReadDir(filepath.Join(home, "spool"))
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("spool left: %s", entries[0].Name())
	}
	return nil
}

func logTail(home string) string {
	b, err := os.ReadFile(filepath.Join(home, "node.log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\n  node.log: " + strings.Join(lines, "\n  ")
}
