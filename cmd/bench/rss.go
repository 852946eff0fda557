package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"

	"github.com/statesync/statesync/internal/p2ptest"
)

// The restorer can run in a child process too (this binary with
// restoreChildFlag), so that its peak RSS is its own: the serving peers
// run in a third process (childServers). The child restores once and
// prints "RESULT took e2e peak live recv peersLeft firstReq hwm"
// (nanoseconds, bytes); hwm is its VmHWM from /proc/self/status, the peak
// RSS of its own address space (wait4's ru_maxrss would not do: Go starts
// a child with vfork semantics, sharing the parent's memory until exec,
// so ru_maxrss is at least the parent's RSS).
const restoreChildFlag = "-restore-child"

// childRun is one restore in a child process.
type childRun struct {
	restoreRun
	maxRSS   int64         // bytes (VmHWM)
	cpu      time.Duration // user + system
	serveCPU time.Duration // the serving child's user + system during this restore
}

// restoreChild is the restoring child's main: args are kind ("ours" or
// "theirs"), size, chunk, rate, temp dir, the servers' addresses
// (comma-separated) and the snapshot's app hash (hex, or "auto" to compute
// it as the serving child does, for a run by hand).
func restoreChild(args []string) error {
	if len(args) != 7 {
		return errors.New("want: kind size chunk rate tmp addrs apphash")
	}
	var n [3]int64
	for i, a := range args[1:4] {
		v, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return err
		}
		n[i] = v
	}
	c := restoreCase{size: n[0], chunk: int(n[1]), rate: n[2]}
	var servers []*p2p.NetAddress
	for _, a := range strings.Split(args[5], ",") {
		na, err := p2p.NewNetAddressString(a)
		if err != nil {
			return err
		}
		servers = append(servers, na)
	}
	var appHash []byte
	var err error
	if args[6] == "auto" { // by hand: the serving child's snapshot of this size and chunk
		appHash = srcApp(c).AppHash()
	} else if appHash, err = hex.DecodeString(args[6]); err != nil {
		return err
	}
	chain, err := benchChainHash(appHash)
	if err != nil {
		return err
	}
	p2pCfg := p2ptest.Config(c.linkRate())
	if dir := os.Getenv(envChildProfile); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", args[0], os.Getpid())))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var run restoreRun
	switch args[0] {
	case "ours":
		run, err = restoreOurs(chain, servers, p2pCfg, args[4], log.NewNopLogger())
	case "theirs":
		run, err = restoreTheirs(chain, servers, p2pCfg, args[4], log.NewNopLogger())
	default:
		return fmt.Errorf("unknown restorer %q", args[0])
	}
	if err != nil {
		return err
	}
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	if os.Getenv(envMemStats) != "" {
		printMemStats(args[0])
	}
	fmt.Printf("RESULT %d %d %d %d %d %d %d %d\n", run.took, run.e2e, run.peak, run.live, run.recv, run.peersLeft,
		run.firstReq, hwm)
	return nil
}

// envMemStats, set by hand for a restoring child, makes it print its
// /proc/self/status memory lines and Go memory statistics to stderr and
// write an allocs profile to the temp dir when its restore is done.
const envMemStats = "STATESYNC_BENCH_MEMSTATS"

// printMemStats does what envMemStats asks, for the restorer kind.
func printMemStats(kind string) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Vm") || strings.HasPrefix(l, "Rss") {
			fmt.Fprintln(os.Stderr, l)
		}
	}
	name := filepath.Join(os.TempDir(), fmt.Sprintf("statesync-bench-%s-%d.memprofile", kind, os.Getpid()))
	if f, err := os.Create(name); err == nil {
		_ = pprof.Lookup("allocs").WriteTo(f, 0)
		_ = f.Close()
	}
	fmt.Fprintf(os.Stderr, "HeapSys %d HeapInuse %d HeapIdle %d HeapReleased %d StackSys %d Sys %d NumGC %d "+
		"TotalAlloc %d (MiB but NumGC)\n", ms.HeapSys>>20, ms.HeapInuse>>20, ms.HeapIdle>>20, ms.HeapReleased>>20,
		ms.StackSys>>20, ms.Sys>>20, ms.NumGC, ms.TotalAlloc>>20)
}

// vmHWM returns this process's peak RSS in bytes (VmHWM in
// /proc/self/status).
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fs := strings.Fields(v)
			if len(fs) == 2 && fs[1] == "kB" {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// runRestoreChild restores c in a child process with the kind of
// restorer, from servers, spooling under tmp. If kill is not nil it is
// polled every 2 ms and the child is killed (SIGKILL) when it returns
// true; killed reports that.
func runRestoreChild(kind string, c restoreCase, appHash []byte, tmp string, servers []*p2p.NetAddress,
	kill func() bool,
) (run childRun, killed bool, err error) {
	self, err := os.Executable()
	if err != nil {
		return run, false, err
	}
	addrs := make([]string, len(servers))
	for i, a := range servers {
		addrs[i] = a.String()
	}
	cmd := exec.Command(self, restoreChildFlag, kind, strconv.FormatInt(c.size, 10), strconv.Itoa(c.chunk),
		strconv.FormatInt(c.rate, 10), tmp, strings.Join(addrs, ","), hex.EncodeToString(appHash))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return run, false, err
	}
	if err := cmd.Start(); err != nil {
		return run, false, err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		result := ""
		for sc.Scan() {
			if r, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
				result = r
			}
		}
		lines <- result
	}()
	if kill != nil {
		killed = pollKill(cmd, lines, kill)
	}
	result := <-lines
	werr := cmd.Wait()
	run.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if killed {
		return run, true, nil
	}
	if werr != nil {
		return run, false, fmt.Errorf("%s restorer: %w", kind, werr)
	}
	var v [8]int64
	fs := strings.Fields(result)
	if len(fs) != len(v) {
		return run, false, fmt.Errorf("%s restorer printed no result", kind)
	}
	for i, f := range fs {
		if v[i], err = strconv.ParseInt(f, 10, 64); err != nil {
			return run, false, err
		}
	}
	run.took, run.e2e, run.peak, run.live = time.Duration(v[0]), time.Duration(v[1]), uint64(v[2]), uint64(v[3])
	run.recv, run.peersLeft, run.firstReq, run.maxRSS = v[4], int(v[5]), time.Duration(v[6]), v[7]
	return run, false, nil
}

// pollKill kills cmd when kill returns true, unless the child finishes
// first (then the result is put back on lines).
func pollKill(cmd *exec.Cmd, lines chan string, kill func() bool) bool {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case r := <-lines:
			lines <- r
			return false
		case <-t.C:
		}
		if kill() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			return true
		}
	}
}

// rssResult is the peak RSS of `repeats` restores by each reactor.
type rssResult struct {
	restoreCase
	ours, theirs []childRun
}

// runRSS restores c `repeats` times with each reactor, each restore in its
// own child process, from c.peers serving nodes (our Reactor) in another.
func runRSS(c restoreCase) (res rssResult, err error) {
	res.restoreCase = c
	servers, stop, serveCPU, err := childServersCPU(c)
	if err != nil {
		return res, err
	}
	defer stop()
	tmp, err := os.MkdirTemp("", "statesync-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	appHash := srcApp(c).AppHash()
	for i := 0; i < repeats; i++ {
		for _, kind := range []string{"ours", "theirs"} {
			before := serveCPU()
			run, _, err := runRestoreChild(kind, c, appHash, tmp, servers, nil)
			if err != nil {
				return res, err
			}
			run.serveCPU = serveCPU() - before
			if kind == "ours" {
				res.ours = append(res.ours, run)
			} else {
				res.theirs = append(res.theirs, run)
			}
		}
	}
	return res, nil
}

// mmmOf formats min / median / max of f over runs.
func mmmOf(runs []childRun, format string, f func(childRun) float64) string {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	return mmmF(v, format)
}

// mmmF formats min / median / max of v.
func mmmF(v []float64, format string) string {
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	return fmt.Sprintf(format+" / "+format+" / "+format, v[0], v[len(v)/2], v[len(v)-1])
}

func printRSS(c config, rs []rssResult) {
	server := "our Reactor"
	if c.rssCmt {
		server = "CometBFT's reactor"
	}
	fmt.Printf("## Peak RSS of a %d MB restore (%d peers served by %s, rate limits lifted, restorer and servers in separate processes)\n\n",
		c.heapMB, c.rssPeers, server)
	header := []string{"chunk", "ours peak RSS MB", "built-in peak RSS MB", "ours / built-in", "ours MB/s", "built-in MB/s",
		"ours CPU s", "built-in CPU s", "servers' CPU s, ours", "servers' CPU s, built-in", "target"}
	var rows [][]string
	for _, r := range rs {
		rss := func(x childRun) float64 { return float64(x.maxRSS) / (1 << 20) }
		speed := func(x childRun) float64 { return float64(r.size) / 1e6 / x.took.Seconds() }
		cpu := func(x childRun) float64 { return x.cpu.Seconds() }
		scpu := func(x childRun) float64 { return x.serveCPU.Seconds() }
		ratio := make([]float64, len(r.ours))
		for i := range r.ours {
			ratio[i] = float64(r.ours[i].maxRSS) / float64(r.theirs[i].maxRSS)
		}
		rows = append(rows, []string{fmt.Sprintf("%d MB", r.chunk>>20), mmmOf(r.ours, "%.0f", rss), mmmOf(r.theirs, "%.0f", rss),
			mmmF(ratio, "%.2f"),
			mmmOf(r.ours, "%.0f", speed), mmmOf(r.theirs, "%.0f", speed), mmmOf(r.ours, "%.1f", cpu),
			mmmOf(r.theirs, "%.1f", cpu), mmmOf(r.ours, "%.1f", scpu), mmmOf(r.theirs, "%.1f", scpu),
			"ours ≤ built-in"})
	}
	table(c.md, header, rows)
	fmt.Printf("%d runs per point, min / median / max; ratio per run (ours then the built-in, back to back). Each\n", repeats)
	fmt.Println("restore runs alone in a child process of the bench (this binary); its peak RSS is the child's VmHWM")
	fmt.Println("(/proc/self/status, read when its Sync has returned): the Go runtime, the chain, the p2p stack and the")
	fmt.Printf("reactor, default GC settings for both. The %d serving nodes (%s, kvapp streaming) run in a\n", c.rssPeers, server)
	fmt.Println("third process. CPU = the child's user + system time; servers' CPU = the serving process's during")
	fmt.Println("that restore (/proc/<pid>/stat).")
	fmt.Println()
}

// resumeResult is `repeats` restores killed at half of the chunks spooled,
// then resumed.
type resumeResult struct {
	restoreCase
	chunks     int
	notSpooled []int // chunks not on disk when the child was killed
	refetched  []int // chunk bytes fetched by the resumed Sync, in chunks
	leftover   []int // spool directories left after the resumed Sync
}

// spooledChunks counts the whole chunk files under tmp's spools (a chunk
// file is written under a temporary name and renamed).
func spooledChunks(tmp string) (chunks, dirs int) {
	ds, _ := filepath.Glob(filepath.Join(tmp, "statesync-spool-*"))
	for _, d := range ds {
		es, _ := os.ReadDir(d)
		for _, e := range es {
			if _, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
				chunks++
			}
		}
	}
	return chunks, len(ds)
}

// runResume restores c with our Reactor in a child process, kills it
// (SIGKILL) when half of the chunks are spooled, then restores again in
// the same temp dir, `repeats` times.
func runResume(c restoreCase) (res resumeResult, err error) {
	res.restoreCase = c
	res.chunks = int((c.size + int64(c.chunk) - 1) / int64(c.chunk))
	servers, stop, err := childServers(c)
	if err != nil {
		return res, err
	}
	defer stop()
	appHash := srcApp(c).AppHash()
	for i := 0; i < repeats; i++ {
		tmp, err := os.MkdirTemp("", "statesync-bench-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(tmp)
		_, killed, err := runRestoreChild("ours", c, appHash, tmp, servers, func() bool {
			n, _ := spooledChunks(tmp)
			return n >= res.chunks/2
		})
		if err != nil {
			return res, err
		}
		if !killed {
			return res, errors.New("the restore finished before it could be killed")
		}
		spooled, _ := spooledChunks(tmp)
		run, _, err := runRestoreChild("ours", c, appHash, tmp, servers, nil)
		if err != nil {
			return res, fmt.Errorf("resumed restore: %w", err)
		}
		_, dirs := spooledChunks(tmp)
		res.notSpooled = append(res.notSpooled, res.chunks-spooled)
		res.refetched = append(res.refetched, int((run.recv+int64(c.chunk)-1)/int64(c.chunk)))
		res.leftover = append(res.leftover, dirs)
	}
	return res, nil
}

func printResume(c config, rs []resumeResult) {
	fmt.Println("## Resume after SIGKILL at half of the chunks spooled (ours)")
	fmt.Println()
	header := []string{"peers", "size", "chunks", "run", "not spooled at kill", "re-downloaded after restart",
		"spools left after", "target"}
	var rows [][]string
	for _, r := range rs {
		for i := range r.refetched {
			verdict := "met"
			if r.refetched[i] > r.notSpooled[i] {
				verdict = "not met"
			}
			rows = append(rows, []string{strconv.Itoa(r.peers), fmt.Sprintf("%d MB", r.size>>20), strconv.Itoa(r.chunks),
				strconv.Itoa(i + 1), strconv.Itoa(r.notSpooled[i]), strconv.Itoa(r.refetched[i]),
				strconv.Itoa(r.leftover[i]), "re-downloaded ≤ not spooled: " + verdict})
		}
	}
	table(c.md, header, rows)
	fmt.Printf("1 MB chunks, %.2f MB/s per connection; the serving nodes (our Reactor) in one process, each\n",
		float64(c.rate)/1e6)
	fmt.Println("restore in a child process killed (SIGKILL) once half of the chunk files are in its spool; a")
	fmt.Println("second child then syncs in the same temp_dir. Re-downloaded = chunk bytes it received ÷ chunk size.")
	fmt.Println()
}

// printLifted summarises the lifted runs per server: min / median / max of
// each reactor's MB/s and of the ratio, per run.
func printLifted(c config, rs []restoreResult) {
	fmt.Println("## Rate limits lifted, 1 MB chunks: ours / built-in MB/s, per run")
	fmt.Println()
	header := []string{"served by", "peers", "size", "runs", "ours MB/s", "built-in MB/s", "ours / built-in", "target"}
	var rows [][]string
	for _, cmt := range []bool{false, true} {
		var ours, theirs, ratio []float64
		var last restoreResult
		for _, r := range rs {
			if r.cmtServe != cmt {
				continue
			}
			mbytes := float64(r.bytes) / 1e6
			o, t := mbytes/r.ours.took.Seconds(), mbytes/r.theirs.took.Seconds()
			ours, theirs, ratio = append(ours, o), append(theirs, t), append(ratio, o/t)
			last = r
		}
		if len(ratio) == 0 {
			continue
		}
		server, target := "ours", "—"
		if cmt {
			server, target = "CometBFT", "≥ 1.5×"
		}
		rows = append(rows, []string{server, strconv.Itoa(last.peers), fmt.Sprintf("%d MB", last.bytes>>20),
			strconv.Itoa(len(ratio)), mmmF(ours, "%.1f"), mmmF(theirs, "%.1f"), mmmF(ratio, "%.2f"), target})
	}
	table(c.md, header, rows)
	fmt.Println("min / median / max; the ratio per run (both reactors back to back, the built-in first in every")
	fmt.Println("second run); time from the accepted offer to the last chunk applied; servers and restorer in one process.")
	fmt.Println()
}
