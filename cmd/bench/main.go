// Command bench measures the library against CometBFT v0.40's built-in
// state sync reactor (`make bench`, or `go run ./cmd/bench -h` for the knobs):
//
//   - restore: the same snapshot restored from the same serving peers over
//     real MConnections (loopback TCP, CometBFT's default 5 120 000 B/s per
//     connection) by our Reactor and by CometBFT's, at 2, 4 and 8 peers with
//     1 MB and 10 MB chunks: time (accepted offer to last chunk applied),
//     throughput, link utilisation (bytes / (time x sum of the peers'
//     rates)), the ratio ours/theirs, and each restore's peak heap growth;
//   - the same with rate limits lifted (CPU-bound);
//   - the peak heap of a 1 GiB restore (kvapp's streaming mode: neither
//     app holds the state, so what grows is the reactors' and the p2p
//     stack's memory);
//   - issue 8's scenarios: end to end (Sync called to state) served by
//     CometBFT's reactor and by ours (-only e2e), one slow, silent or
//     withholding peer (faults), the peak RSS of a 1 GiB restore with the
//     restorer alone in a child process (rss), and a restore killed with
//     SIGKILL at half and resumed (resume);
//   - backfill blocks/s from 4 peers at 0 and 50 ms of added round trip;
//   - serving: the 99th-percentile latency of small messages on another
//     channel while one node serves 16 syncing peers, ours against
//     CometBFT's built-in reactor (-only serving runs it alone).
//
// Everything runs in one process: the serving nodes' memory and CPU count
// too, and on a small machine the serving side competes with the restorer.
// -md prints the tables as Markdown for BENCHMARKS.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/cometbft/cometbft/libs/log"

	"github.com/statesync/statesync"
)

type config struct {
	peers          []int
	e2ePeers       []int
	chunksMB       []int
	sizeMB         int
	rate           int64
	liftedPeers    int
	liftedCmtPeers int
	heapMB         int
	heapChunksMB   []int
	heapIsolate    bool
	rssPeers       int
	rssCmt         bool
	isolate        bool
	backfill       int
	bfWindow       int
	backfillRTTs   []time.Duration
	only           map[string]bool
	serving        servingCase
	md, verbose    bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == restorersChildFlag {
		if err := restorersChild(os.Args[2:]); err != nil {
			fatalf("restorers child: %v", err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == childFlag {
		if err := serveChild(os.Args[2:]); err != nil {
			fatalf("serving child: %v", err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == restoreChildFlag {
		if err := restoreChild(os.Args[2:]); err != nil {
			fatalf("restoring child: %v", err)
		}
		return
	}
	var (
		c        config
		peers    = flag.String("peers", "2,4,8", "peer counts for the restore comparison")
		chunks   = flag.String("chunks", "1,10", "chunk sizes in MB")
		rtts     = flag.String("backfill-rtt", "0,50ms", "round trips added to backfill requests")
		only     = flag.String("only", "e2e,faults,restore,lifted,rss,resume,heap,backfill,serving", "sections to run")
		e2ePeers = flag.String("e2e-peers", "4,8,16", "peer counts for the end-to-end comparison")
		quick    = flag.Bool("quick", false, "small sizes: a run of about a minute to check that everything works")
		sizeArg  = flag.Int("size", 0, "snapshot size in MB for the comparison (0: 100 MB, or 6 chunks per peer if more)")
	)
	flag.Int64Var(&c.rate, "rate", 5_120_000, "per-connection send/recv rate in B/s (CometBFT's default)")
	flag.IntVar(&c.liftedPeers, "lifted-peers", 4, "peers for the run with rate limits lifted (1 MB chunks)")
	flag.IntVar(&c.liftedCmtPeers, "lifted-cmt-peers", 8, "peers for the run with rate limits lifted served by CometBFT's reactor (0: none)")
	flag.IntVar(&c.heapMB, "heap-size", 1024, "size in MB of the restores whose peak heap and peak RSS are measured")
	heapChunks := flag.String("heap-chunks", "1,10", "chunk sizes in MB of those restores")
	flag.IntVar(&c.rssPeers, "rss-peers", 4, "serving peers of the peak-RSS restores")
	flag.BoolVar(&c.rssCmt, "rss-cmt", false, "serve the peak-RSS restores with CometBFT's reactor instead of ours")
	childProfile := flag.String("child-cpuprofile", "", "write a CPU profile of each restoring child process (rss, resume) into this directory")
	oursWindow := flag.Int("ours-chunk-window", 0, "chunk_window of our restorer (0: the default; for experiments)")
	oursBudget := flag.Int64("ours-memory-budget", -1, "chunk_memory_budget of our restorer in bytes (-1: the default; for experiments)")
	flag.BoolVar(&c.heapIsolate, "heap-isolate", true, "run that restore's serving peers in a child process, so the heap measured is the restorer's alone")
	flag.BoolVar(&c.isolate, "isolate", false, "run the comparison's serving peers in a child process too")
	flag.IntVar(&c.backfill, "backfill-blocks", 10000, "blocks to backfill")
	flag.IntVar(&c.bfWindow, "backfill-window", 0, "backfill_window (0: the default)")
	flag.IntVar(&c.serving.peers, "serving-peers", 16, "syncing peers of the serving-latency scenario")
	flag.IntVar(&c.serving.rounds, "serving-rounds", 2, "interleaved runs of each server in the serving-latency scenario")
	flag.StringVar(&c.serving.load, "serving-load", "requests",
		"syncing peers of the serving-latency scenario: requests (load generators) or restore (CometBFT's restorers)")
	flag.DurationVar(&c.serving.measure, "serving-time", 15*time.Second, "how long the serving-latency scenario measures, per server")
	servingChunkMB := flag.Int("serving-chunk", 1, "chunk size in MB of the serving-latency scenario")
	flag.BoolVar(&c.md, "md", false, "print Markdown tables")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (restorers and in-process servers) to the file")
	flag.BoolVar(&c.verbose, "v", false, "log the reactors (info) to stderr")
	flag.Parse()

	// The restorer's knobs reach child processes through the environment.
	for k, v := range map[string]string{envChildProfile: *childProfile, envChunkWindow: strconv.Itoa(*oursWindow),
		envMemoryBudget: strconv.FormatInt(*oursBudget, 10)} {
		if err := os.Setenv(k, v); err != nil {
			fatalf("%s: %v", k, err)
		}
	}
	var err error
	if c.peers, err = ints(*peers); err != nil {
		fatalf("-peers: %v", err)
	}
	if c.chunksMB, err = ints(*chunks); err != nil {
		fatalf("-chunks: %v", err)
	}
	if c.e2ePeers, err = ints(*e2ePeers); err != nil {
		fatalf("-e2e-peers: %v", err)
	}
	if c.heapChunksMB, err = ints(*heapChunks); err != nil {
		fatalf("-heap-chunks: %v", err)
	}
	for _, s := range strings.Split(*rtts, ",") {
		if s == "0" {
			s = "0s"
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			fatalf("-backfill-rtt: %v", err)
		}
		c.backfillRTTs = append(c.backfillRTTs, d)
	}
	c.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		c.only[strings.TrimSpace(s)] = true
	}
	c.sizeMB = *sizeArg
	c.serving.chunk, c.serving.rate = *servingChunkMB<<20, c.rate
	c.serving.size = int64(64 * c.serving.chunk)
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["chunks"] {
			c.chunksMB = []int{1} // 10 MB chunks need hundreds of MB to mean anything
		}
		if c.sizeMB == 0 {
			c.sizeMB = 16
		}
		c.heapMB, c.backfill = min(c.heapMB, 128), min(c.backfill, 300)
		c.serving.measure, c.serving.rounds = min(c.serving.measure, 3*time.Second), 1
	}
	logger := log.NewNopLogger()
	if c.verbose {
		logger = log.NewFilter(log.NewTMLogger(log.NewSyncWriter(os.Stderr)), log.AllowInfo())
	}
	fmt.Printf("# go run ./cmd/bench %s\n# %s, %d CPUs, %s\n\n", strings.Join(os.Args[1:], " "),
		runtime.Version(), runtime.NumCPU(), time.Now().Format("2006-01-02"))
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fatalf("-cpuprofile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatalf("-cpuprofile: %v", err)
		}
	}
	err = run(c, logger)
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func mb(b uint64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }

func run(c config, logger log.Logger) error {
	if err := runScenarios(c, logger); err != nil {
		return err
	}
	var results []restoreResult
	if c.only["restore"] {
		for _, chunkMB := range c.chunksMB {
			for _, peers := range c.peers {
				chunk := chunkMB << 20
				size := int64(c.sizeMB) << 20
				if c.sizeMB == 0 {
					size = max(100<<20, int64(6*peers*chunk))
				}
				fmt.Fprintf(os.Stderr, "restore: %d MB chunks, %d peers, %d MB ...\n", chunkMB, peers, size>>20)
				r, err := runRestore(restoreCase{peers: peers, chunk: chunk, size: size, rate: c.rate, ours: true, their: true,
					isolate: c.isolate}, logger)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
		}
	}
	if c.only["lifted"] {
		size := int64(c.sizeMB) << 20
		if c.sizeMB == 0 {
			size = 256 << 20
		}
		var lifted []restoreResult
		for i := 0; i < repeats; i++ {
			fmt.Fprintf(os.Stderr, "restore: rate limits lifted, 1 MB chunks, %d peers, %d MB ...\n", c.liftedPeers, size>>20)
			r, err := runRestore(restoreCase{peers: c.liftedPeers, chunk: 1 << 20, size: size, ours: true, their: true,
				isolate: c.isolate, theirsFirst: i%2 == 1}, logger)
			if err != nil {
				return err
			}
			lifted = append(lifted, r)
			if c.liftedCmtPeers > 0 {
				fmt.Fprintf(os.Stderr, "restore: rate limits lifted, served by CometBFT's reactor, %d peers, %d MB ...\n",
					c.liftedCmtPeers, size>>20)
				r, err := runRestore(restoreCase{peers: c.liftedCmtPeers, chunk: 1 << 20, size: size, ours: true, their: true,
					cmtServe: true, theirsFirst: i%2 == 1}, logger)
				if err != nil {
					return err
				}
				lifted = append(lifted, r)
			}
		}
		results = append(results, lifted...)
		printLifted(c, lifted)
	}
	if len(results) > 0 {
		printRestore(c, results)
	}

	if c.only["heap"] && c.heapMB > 0 {
		var rs []restoreResult
		for _, chunkMB := range c.heapChunksMB {
			fmt.Fprintf(os.Stderr, "restore: %d MB, %d MB chunks, 2 peers, lifted, for the peak heap ...\n", c.heapMB, chunkMB)
			r, err := runRestore(restoreCase{peers: 2, chunk: chunkMB << 20, size: int64(c.heapMB) << 20, ours: true, their: true,
				isolate: c.heapIsolate}, logger)
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		printHeap(c, rs)
	}

	if c.only["rss"] && c.heapMB > 0 {
		var rs []rssResult
		for _, chunkMB := range c.heapChunksMB {
			fmt.Fprintf(os.Stderr, "rss: %d MB, %d MB chunks, %d peers, lifted, restorers in child processes ...\n",
				c.heapMB, chunkMB, c.rssPeers)
			r, err := runRSS(restoreCase{peers: c.rssPeers, chunk: chunkMB << 20, size: int64(c.heapMB) << 20, cmtServe: c.rssCmt})
			if err != nil {
				return fmt.Errorf("rss: %w", err)
			}
			rs = append(rs, r)
		}
		printRSS(c, rs)
	}
	if c.only["resume"] {
		size := int64(c.sizeMB) << 20
		if c.sizeMB == 0 {
			size = faultSize
		}
		fmt.Fprintf(os.Stderr, "resume: %d MB, 4 peers, killed at half ...\n", size>>20)
		r, err := runResume(restoreCase{peers: 4, chunk: 1 << 20, size: size, rate: c.rate})
		if err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		printResume(c, []resumeResult{r})
	}

	if c.only["serving"] {
		fmt.Fprintf(os.Stderr, "serving: %d syncing peers, ours and CometBFT's in turn, %d x %v each ...\n",
			c.serving.peers, c.serving.rounds, c.serving.measure)
		r, err := runServing(c.serving, logger)
		if err != nil {
			return err
		}
		printServing(c, []servingResult{r})
	}

	if c.only["backfill"] && c.backfill > 0 {
		fmt.Fprintf(os.Stderr, "backfill: %d blocks from 4 peers ...\n", c.backfill)
		bf, err := runBackfill(c.backfill, 4, c.bfWindow, c.backfillRTTs, logger)
		if err != nil {
			return err
		}
		printBackfill(c, bf)
	}
	return nil
}

// table prints rows as Markdown or aligned text.
func table(md bool, header []string, rows [][]string) {
	if md {
		fmt.Println("| " + strings.Join(header, " | ") + " |")
		fmt.Println("|" + strings.Repeat("---|", len(header)))
		for _, r := range rows {
			fmt.Println("| " + strings.Join(r, " | ") + " |")
		}
		fmt.Println()
		return
	}
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
	}
	for _, r := range rows {
		for i, f := range r {
			width[i] = max(width[i], len(f))
		}
	}
	line := func(fs []string) {
		for i, f := range fs {
			fmt.Printf("%-*s  ", width[i], f)
		}
		fmt.Println()
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	fmt.Println()
}

func printRestore(c config, rs []restoreResult) {
	fmt.Println("## Restore: ours vs CometBFT v0.40's built-in reactor (same snapshot, same peers)")
	fmt.Println()
	header := []string{"served by", "rate/conn", "chunk", "peers", "size", "ours s", "theirs s", "ours MB/s", "theirs MB/s",
		"ours util", "theirs util", "ours/theirs", "ours heap MB", "theirs heap MB"}
	var rows [][]string
	for _, r := range rs {
		mbytes := float64(r.bytes) / 1e6
		ours, theirs := mbytes/r.ours.took.Seconds(), mbytes/r.theirs.took.Seconds()
		rate, ou, tu := "lifted", "—", "—"
		if r.rate > 0 {
			capacity := float64(r.peers) * float64(r.rate) / 1e6
			rate = fmt.Sprintf("%.2f MB/s", float64(r.rate)/1e6)
			ou, tu = fmt.Sprintf("%.0f %%", 100*ours/capacity), fmt.Sprintf("%.0f %%", 100*theirs/capacity)
		}
		server := "ours"
		if r.cmtServe {
			server = "CometBFT"
		}
		rows = append(rows, []string{server, rate, fmt.Sprintf("%d MB", r.chunk>>20), strconv.Itoa(r.peers),
			fmt.Sprintf("%d MB", r.bytes>>20),
			fmt.Sprintf("%.1f", r.ours.took.Seconds()), fmt.Sprintf("%.1f", r.theirs.took.Seconds()),
			fmt.Sprintf("%.1f", ours), fmt.Sprintf("%.1f", theirs), ou, tu,
			fmt.Sprintf("%.2f", ours/theirs), mb(r.ours.peak), mb(r.theirs.peak)})
	}
	table(c.md, header, rows)
	fmt.Println("time: accepted OfferSnapshot to last chunk applied; util = bytes / (time x peers x rate);")
	fmt.Println("ours/theirs = throughput ratio; heap = peak growth of heap objects during the restore")
	fmt.Println("(whole process: the serving peers' chunks in flight included).")
	fmt.Println()
}

func printHeap(c config, rs []restoreResult) {
	where := "the serving peers in this process"
	if c.heapIsolate {
		where = "the serving peers in a child process: the heap is the restorer's alone"
	}
	fmt.Printf("## Peak heap of a %d MB restore (2 peers, rate limits lifted, %s)\n\n", c.heapMB, where)
	header := []string{"reactor", "chunk", "time s", "MB/s", "peak heap MB", "peak live heap MB", "ours: 64 MiB + in flight"}
	var rows [][]string
	for _, r := range rs {
		inflight := uint64(r.peers * statesync.DefaultConfig().ChunkWindow * r.chunk)
		budget := uint64(64<<20) + inflight
		verdict := fmt.Sprintf("%s MB: met", mb(budget))
		if r.ours.peak > budget {
			verdict = fmt.Sprintf("%s MB: not met", mb(budget))
		}
		row := func(name string, x restoreRun, v string) []string {
			return []string{name, fmt.Sprintf("%d MB", r.chunk>>20), fmt.Sprintf("%.1f", x.took.Seconds()),
				fmt.Sprintf("%.1f", float64(r.bytes)/1e6/x.took.Seconds()), mb(x.peak), mb(x.live), v}
		}
		rows = append(rows, row("ours", r.ours, verdict), row("CometBFT v0.40", r.theirs, "—"))
	}
	table(c.md, header, rows)
	fmt.Println("kvapp streaming mode: the serving app generates each chunk when asked, the restoring app keeps")
	fmt.Println("a digest. peak heap = growth of heap objects (incl. garbage not yet swept) above the baseline;")
	fmt.Println("live = growth of the live heap as of the last GC. In flight: 2 peers x chunk_window x chunk.")
	fmt.Println()
}

func printBackfill(c config, bs []backfillResult) {
	fmt.Println("## Backfill (ours; CometBFT v0.40 has none)")
	fmt.Println()
	header := []string{"peers", "backfill_window", "added RTT", "blocks", "time s", "blocks/s", "CPU busy", "stopped"}
	var rows [][]string
	for _, b := range bs {
		busy := b.cpu.Seconds() / (b.took.Seconds() * float64(runtime.NumCPU()))
		rows = append(rows, []string{strconv.Itoa(b.peers), strconv.Itoa(b.window), b.rtt.String(), strconv.Itoa(b.blocks),
			fmt.Sprintf("%.2f", b.took.Seconds()), fmt.Sprintf("%.0f", float64(b.blocks)/b.took.Seconds()),
			fmt.Sprintf("%.0f %%", 100*busy), string(b.stopped)})
	}
	table(c.md, header, rows)
	fmt.Println("CPU busy = process CPU time (the backfilling node and its 4 serving nodes share the process)")
	fmt.Println("÷ (time × CPUs). Near 100 % the backfill is bounded by verification and storage, not by waiting.")
	fmt.Println()
}
