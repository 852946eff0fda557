// Command bench (make bench-cosmos, run by make bench) restores the
// example chain's IAVL snapshot from 4 peers at CometBFT's default link
// rate (5 120 000 B/s each way per connection), with this library's start
// and with the SDK's stock start (CometBFT's built-in state sync), one
// after the other against the same validators, each with its reactor's
// default configuration, and prints a markdown table: end-to-end time
// (process start to restored), split into start-to-snapshot-accepted
// (process and genesis load, discovery, light-block verification) and
// accepted-to-restored (fetch and the SDK's strictly ordered apply,
// pipelined), and the restoring process's CPU time. For ours the restore
// is split further into when the last chunk was fetched and when the last
// was applied.
//
// Each -app variant (app.toml keys of the restoring nodes, the same for
// both sides) is run by both sides in turn.
//
// The state is made by the genesis: validator 0's account holds -denoms
// coins with 118-character denoms (bank balances and supply entries), so
// the IAVL stores hold well over 100 MB; the snapshot's size is printed.
// Once every validator has its first snapshot, they are restarted with a
// snapshot interval no run reaches, so that no validator is exporting the
// whole state again while the nodes restore.
// Run it from the cosmos module's directory.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/statesync/statesync/cosmos/internal/sdknet"
)

func main() {
	denoms := flag.Int("denoms", 400_000, "coins of 118-character denoms added to the genesis")
	variants := flag.String("app", "default;iavl-disable-fastnode=true",
		"';'-separated app.toml variants for the restoring nodes (each 'default' or comma-separated key=value "+
			"of app.toml's top level), each run by both sides")
	flag.IntVar(&runs, "runs", 2, "pairs of restores per variant (the side that goes first alternates)")
	flag.StringVar(&profileDir, "cpuprofile", "", "if set, the restoring nodes write CPU profiles (<side>-<n>.pprof) into this directory")
	flag.Parse()
	if runs < 1 {
		fmt.Fprintln(os.Stderr, "bench-cosmos: -runs must be at least 1")
		os.Exit(2)
	}
	sdknet.Main("bench-cosmos", func(r *sdknet.Runner) { run(r, *denoms, strings.Split(*variants, ";")) })
}

var (
	profileDir string
	runs       int
)

const interval = 10

// Both sides run with their reactor's default configuration: CometBFT's
// [statesync] defaults (discovery_time 15s, chunk_request_timeout 10s,
// chunk_fetchers 4) and this library's (discovery_timeout 2m, which ends
// discovery early once peers have answered). Only what a node must be
// told is set: the trust root, RPC servers for the stock light client,
// use_p2p for ours, and backfill off (the stock reactor has none).
var reactorDefaults = map[string]string{
	"backfill":              "false",
	"discovery_time":        sdknet.Q("15s"),
	"discovery_timeout":     sdknet.Q("2m0s"),
	"chunk_request_timeout": sdknet.Q("10s"),
}

func run(r *sdknet.Runner, denoms int, variants []string) {
	if err := sdknet.Build(".", r.TempDir()); err != nil {
		r.Fatalf("%v", err)
	}
	log("starting 4 validators with %d extra coins in the genesis", denoms)
	nw := sdknet.NewNetworkWith(r, 4, sdknet.Options{
		Interval: interval, TimeoutCommit: time.Second,
		EditGenesis: func(t sdknet.T, path string) { fill(t, path, denoms) },
	})
	for _, v := range nw.Vals {
		v.WaitLog(r, 30*time.Minute, `"completed state snapshot"`)
	}
	quiesce(r, nw)
	snapH := sdknet.LatestSnapshot(nw.Vals[0])
	size := dirSize(filepath.Join(nw.Vals[0].Home, "data", "snapshots", fmt.Sprint(snapH)))
	log("snapshot at height %d: %.1f MB", snapH, float64(size)/1e6)

	var rows, summary []string
	for i, v := range variants {
		app := appOptions(r, v)
		var sumOurs, sumStock time.Duration
		for k := range runs {
			// Alternate which side goes first, so that neither always
			// meets the machine in the same state.
			var ours, stock timed
			if k%2 == 0 {
				ours = restoreOurs(r, nw, i, k, app)
				stock = restoreStock(r, nw, i, k, app)
			} else {
				stock = restoreStock(r, nw, i, k, app)
				ours = restoreOurs(r, nw, i, k, app)
			}
			sumOurs, sumStock = sumOurs+ours.total, sumStock+stock.total
			rows = append(rows, pairRows(v, ours, stock)...)
		}
		summary = append(summary, fmt.Sprintf("| %s | %d | %.1f s | %.1f s | **%.2fx** |", v, runs,
			sumOurs.Seconds()/float64(runs), sumStock.Seconds()/float64(runs), sumStock.Seconds()/sumOurs.Seconds()))
	}
	fmt.Printf("\n%.0f MB SDK snapshot (height %d) restored from 4 peers at 5.12 MB/s per link; each reactor's "+
		"default config; app.toml variant applied to both sides\n\n", float64(size)/1e6, snapH)
	fmt.Println("| app.toml | side | end to end | start to discovery (process, app, genesis, node) | " +
		"discovery and verification to snapshot accepted | accepted to restored (fetch + apply, pipelined) | " +
		"CPU of the restoring process (user+sys) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, row := range rows {
		fmt.Println(row)
	}
	fmt.Println("\n| app.toml | runs | ours, mean end to end | built-in, mean end to end | built-in / ours |")
	fmt.Println("|---|---|---|---|---|")
	for _, row := range summary {
		fmt.Println(row)
	}
}

func restoreOurs(r *sdknet.Runner, nw *sdknet.Network, variant, run int, app map[string]string) timed {
	return restore(r, nw, fmt.Sprintf("ours-%d-%d", variant, run), "start", `"state sync: discovery"`,
		"Snapshot accepted; restoring", "state sync complete; block sync running", app)
}

func restoreStock(r *sdknet.Runner, nw *sdknet.Network, variant, run int, app map[string]string) timed {
	return restore(r, nw, fmt.Sprintf("stock-%d-%d", variant, run), "start-stock", `"Discovering snapshots"`,
		"Snapshot accepted, restoring", `"Snapshot restored"`, app)
}

// pairRows are the table rows of one pair of restores.
func pairRows(v string, ours, stock timed) []string {
	fetched, applied := split(ours.log)
	return []string{
		fmt.Sprintf("| %s | ours (exampled start) | %.1f s | %.1f s | %.1f s | %.1f s (fetch done %s, apply done %s) | %.1f s |",
			v, ours.total.Seconds(), ours.startup.Seconds(), ours.discover.Seconds(), ours.restore.Seconds(),
			fetched, applied, ours.cpu.Seconds()),
		fmt.Sprintf("| %s | CometBFT built-in (exampled start-stock) | %.1f s | %.1f s | %.1f s | %.1f s (apply done %s) | %.1f s |",
			v, stock.total.Seconds(), stock.startup.Seconds(), stock.discover.Seconds(), stock.restore.Seconds(),
			stockApplyDone(stock.log), stock.cpu.Seconds()),
		fmt.Sprintf("| %s | **ratio** | **%.2fx** | | | | |", v, stock.total.Seconds()/ours.total.Seconds()),
	}
}

// quiesce restarts the validators with a snapshot interval no run reaches:
// they keep serving the snapshots they have, but stop taking a new one of
// the whole state every 10 blocks (which, at this size, keeps 4 processes
// exporting and compressing during every restore: no chain snapshots its
// state every 10 s). It waits until the chain makes blocks again.
func quiesce(r *sdknet.Runner, nw *sdknet.Network) {
	for _, v := range nw.Vals {
		v.Stop(r)
	}
	for _, v := range nw.Vals {
		sdknet.SetTOML(r, filepath.Join(v.Home, "config", "app.toml"), "state-sync",
			map[string]string{"snapshot-interval": "1000000"})
		v.Start(r, sdknet.Exampled, nil, "start")
	}
	var h int64
	v0 := nw.Vals[0]
	sdknet.WaitFor(r, 10*time.Minute, "validator 0's RPC after the restart", func() (bool, error) {
		if v0.Exited() {
			return false, fmt.Errorf("%s exited (%v)", v0.Name, v0.WaitErr)
		}
		var err error
		h, err = sdknet.Height(v0.RPCURL())
		return err == nil, nil
	}, v0)
	sdknet.WaitHeight(r, nw.Vals[0], h+3, 10*time.Minute)
	log("validators restarted without further snapshots; chain at height %d", h+3)
}

// appOptions parses a variant: "default" or key=value pairs (raw TOML
// values) of app.toml's top level.
func appOptions(r *sdknet.Runner, v string) map[string]string {
	kv := map[string]string{}
	if v == "default" || v == "" {
		return kv
	}
	for _, p := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			r.Fatalf("app variant %q: want key=value", p)
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return kv
}

type timed struct {
	total, startup, discover, restore, cpu time.Duration
	log                                    string
}

// restore starts a fresh node with cmd, waits for discovering, accepted
// and then done in its log, stops it and returns the times (200 ms
// polling).
func restore(r *sdknet.Runner, nw *sdknet.Network, name, cmd, discovering, accepted, done string,
	app map[string]string,
) timed {
	n := nw.Join(r, name, nw.Vals, 0)
	var rpc []*sdknet.Node
	if cmd == "start-stock" {
		rpc = nw.Vals[:2]
	}
	nw.StateSync(r, n, rpc, reactorDefaults)
	if len(app) > 0 {
		sdknet.SetTOML(r, filepath.Join(n.Home, "config", "app.toml"), "", app)
	}
	args := []string{cmd}
	if profileDir != "" {
		args = append(args, "--cpu-profile", filepath.Join(profileDir, name+".pprof"))
	}
	start := time.Now()
	n.Start(r, sdknet.Exampled, nil, args...)
	n.WaitLog(r, 30*time.Minute, discovering)
	startup := time.Since(start)
	n.WaitLog(r, 30*time.Minute, accepted)
	before := time.Since(start)
	n.WaitLog(r, 30*time.Minute, done)
	total := time.Since(start)
	n.Stop(r)
	t := timed{total: total, startup: startup, discover: before - startup, restore: total - before, cpu: n.CPU(), log: n.Log()}
	log("%s: restored in %.1f s (discovery from %.1f s, snapshot accepted after %.1f s), %.1f s CPU", name,
		total.Seconds(), startup.Seconds(), before.Seconds(), t.cpu.Seconds())
	return t
}

// split reads fetched_s and applied_s from our handler's completion line
// (seconds after the restore started).
func split(l string) (fetched, applied string) {
	fetched, applied = "?", "?"
	for _, line := range strings.Split(l, "\n") {
		if !strings.Contains(line, "state sync complete") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			fetched = fmt.Sprintf("%.1f s", m["fetched_s"])
			applied = fmt.Sprintf("%.1f s", m["applied_s"])
		}
	}
	return fetched, applied
}

// stockApplyDone reads, from CometBFT's built-in state sync log (JSON,
// one-second timestamps), how long after "Snapshot accepted, restoring"
// the last chunk was applied.
func stockApplyDone(l string) string {
	var start, last time.Time
	for _, line := range strings.Split(l, "\n") {
		accepted := strings.Contains(line, `"Snapshot accepted, restoring"`)
		applied := strings.Contains(line, `"Applied snapshot chunk to ABCI app"`)
		if !accepted && !applied {
			continue
		}
		var m struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if accepted {
			start = m.Time
		} else {
			last = m.Time
		}
	}
	if start.IsZero() || last.IsZero() {
		return "?"
	}
	return fmt.Sprintf("%.0f s (1 s log resolution)", last.Sub(start).Seconds())
}

// fill adds denoms coins to validator 0's genesis balance and to the
// supply.
func fill(t sdknet.T, path string, denoms int) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	var gen map[string]json.RawMessage
	if err := json.Unmarshal(b, &gen); err != nil {
		t.Fatalf("genesis: %v", err)
	}
	var state map[string]json.RawMessage
	if err := json.Unmarshal(gen["app_state"], &state); err != nil {
		t.Fatalf("app_state: %v", err)
	}
	type coin struct {
		Denom  string `json:"denom"`
		Amount string `json:"amount"`
	}
	var bank struct {
		Params   json.RawMessage `json:"params"`
		Balances []struct {
			Address string `json:"address"`
			Coins   []coin `json:"coins"`
		} `json:"balances"`
		Supply        []coin          `json:"supply"`
		DenomMetadata json.RawMessage `json:"denom_metadata"`
		SendEnabled   json.RawMessage `json:"send_enabled"`
	}
	if err := json.Unmarshal(state["bank"], &bank); err != nil {
		t.Fatalf("bank genesis: %v", err)
	}
	rng := rand.New(rand.NewSource(1))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	extra := make([]coin, denoms)
	for i := range extra {
		var sb strings.Builder
		fmt.Fprintf(&sb, "a%07d", i) // sorts before "stake", in index order
		for range 110 {
			sb.WriteByte(alnum[rng.Intn(len(alnum))])
		}
		extra[i] = coin{Denom: sb.String(), Amount: "1"}
	}
	bank.Balances[0].Coins = append(append([]coin{}, extra...), bank.Balances[0].Coins...)
	bank.Supply = append(append([]coin{}, extra...), bank.Supply...)
	if state["bank"], err = json.Marshal(bank); err != nil {
		t.Fatalf("%v", err)
	}
	if gen["app_state"], err = json.Marshal(state); err != nil {
		t.Fatalf("%v", err)
	}
	if b, err = json.Marshal(gen); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-cosmos: "+format+"\n", args...)
}
