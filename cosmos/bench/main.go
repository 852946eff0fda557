// Command bench (make bench-cosmos, run by make bench) restores the
// example chain's IAVL snapshot from 4 peers at CometBFT's default link
// rate (5 120 000 B/s each way per connection), with this library's start
// and with the SDK's stock start (CometBFT's built-in state sync), one
// after the other against the same validators, and prints a markdown table:
// end-to-end time (process start to restored), and for ours the split
// between fetching and the SDK's strictly ordered apply.
//
// The state is made by the genesis: validator 0's account holds -denoms
// coins with 118-character denoms (bank balances and supply entries), so
// the IAVL stores hold well over 100 MB; the snapshot's size is printed.
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
	flag.Parse()
	sdknet.Main("bench-cosmos", func(r *sdknet.Runner) { run(r, *denoms) })
}

const interval = 10

func run(r *sdknet.Runner, denoms int) {
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
	snapH := sdknet.LatestSnapshot(nw.Vals[0])
	size := dirSize(filepath.Join(nw.Vals[0].Home, "data", "snapshots", fmt.Sprint(snapH)))
	log("snapshot at height %d: %.1f MB", snapH, float64(size)/1e6)

	ours := restore(r, nw, "ours", "start", "state sync complete; block sync running")
	oursSplit := split(ours.Log())
	ours.Stop(r)
	stock := restore(r, nw, "stock", "start-stock", `"Snapshot restored"`)
	stockApplied := stockApplyDone(stock.Log())
	stock.Stop(r)

	fmt.Printf("\n| restore of a %.0f MB SDK snapshot from 4 peers at 5.12 MB/s per link | end to end | fetch done | apply done |\n", float64(size)/1e6)
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| ours (exampled start) | %.1f s | %s | %s |\n", ours.took.Seconds(), oursSplit[0], oursSplit[1])
	fmt.Printf("| CometBFT built-in (exampled start-stock) | %.1f s | not logged | %s |\n", stock.took.Seconds(), stockApplied)
	fmt.Printf("\nours is %.2fx the built-in's speed end to end (both include 5 s of snapshot discovery).\n",
		stock.took.Seconds()/ours.took.Seconds())
}

type timed struct {
	*sdknet.Node
	took time.Duration
}

// restore starts a fresh node with cmd and waits for done in its log.
func restore(r *sdknet.Runner, nw *sdknet.Network, name, cmd, done string) timed {
	n := nw.Join(r, name, nw.Vals, 0)
	var rpc []*sdknet.Node
	if cmd == "start-stock" {
		rpc = nw.Vals[:2]
	}
	nw.StateSync(r, n, rpc, map[string]string{"backfill": "false", "discovery_timeout": sdknet.Q("10m"),
		"chunk_request_timeout": sdknet.Q("2m")})
	start := time.Now()
	n.Start(r, sdknet.Exampled, nil, cmd)
	n.WaitLog(r, 30*time.Minute, done)
	took := time.Since(start)
	log("%s: restored in %.1f s", name, took.Seconds())
	return timed{Node: n, took: took}
}

// split reads fetched_s and applied_s from our handler's completion line.
func split(l string) [2]string {
	out := [2]string{"?", "?"}
	for _, line := range strings.Split(l, "\n") {
		if !strings.Contains(line, "state sync complete") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out[0] = fmt.Sprintf("%.1f s", m["fetched_s"])
			out[1] = fmt.Sprintf("%.1f s (after the restore started)", m["applied_s"])
		}
	}
	return out
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
	return fmt.Sprintf("%.0f s (after the restore started; 1 s log resolution)", last.Sub(start).Seconds())
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
