package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/store"

	"github.com/statesync/statesync"
	"github.com/statesync/statesync/internal/kvapp"
	"github.com/statesync/statesync/internal/p2ptest"
)

// The serving peers can run in a child process (this binary with
// childFlag), so that the restoring process's heap is the restorer's
// alone. The child prints "ADDR <id@host:port>" per node, then "READY",
// and serves until its stdin closes.
const childFlag = "-serve-child"

// srcApp is the serving app of a restore case; the same options give the
// same snapshot (and app hash) in any process.
func srcApp(c restoreCase) *kvapp.App {
	return kvapp.New(kvapp.Options{StreamBytes: c.size, ChunkSize: c.chunk, Height: snapshotHeight, Seed: 7})
}

// startServers starts c.peers serving nodes running our Reactor, all on
// one shared source app, in this process; they stop with e.
func startServers(e *env, c restoreCase, logger log.Logger) []*p2p.NetAddress {
	src := srcApp(c)
	conns := appConns(e, src)
	p2pCfg := p2ptest.Config(c.linkRate())
	addrs := make([]*p2p.NetAddress, c.peers)
	for i := range addrs {
		r, err := statesync.NewReactor(statesync.DefaultConfig(), statesync.Deps{
			Snapshots: conns.Snapshot(), Query: conns.Query(),
			StateStore: sm.NewStore(dbm.NewMemDB(), sm.StoreOptions{}),
			BlockStore: store.NewBlockStore(dbm.NewMemDB()),
			Logger:     logger.With("server", i),
		})
		if err != nil {
			e.Fatalf("server reactor: %v", err)
		}
		addrs[i] = p2ptest.Start(e, p2pCfg, i, map[string]p2p.Reactor{"STATESYNC": r}, nil).Addr
	}
	return addrs
}

// serveChild is the child's main: args are peers, size, chunk, rate, and
// optionally "cmt" to serve with CometBFT's built-in reactor.
func serveChild(args []string) error {
	if len(args) != 4 && len(args) != 5 {
		return errors.New("want: peers size chunk rate [cmt]")
	}
	var n [4]int64
	for i, a := range args[:4] {
		v, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return err
		}
		n[i] = v
	}
	c := restoreCase{peers: int(n[0]), size: n[1], chunk: int(n[2]), rate: n[3], cmtServe: len(args) == 5 && args[4] == "cmt"}
	return withEnv(func(e *env) error {
		start := startServers
		if c.cmtServe {
			start = startCmtServers
		}
		for _, a := range start(e, c, log.NewNopLogger()) {
			fmt.Printf("ADDR %s\n", a)
		}
		fmt.Println("READY")
		_, _ = io.Copy(io.Discard, os.Stdin) // serve until the parent closes our stdin
		return nil
	})
}

// childServers runs startServers in a child process and returns the
// nodes' addresses and a function that stops the child.
func childServers(c restoreCase) ([]*p2p.NetAddress, func(), error) {
	addrs, stop, _, err := childServersCPU(c)
	return addrs, stop, err
}

// childServersCPU is childServers that also returns a function reading
// the serving child's CPU time so far (user + system).
func childServersCPU(c restoreCase) ([]*p2p.NetAddress, func(), func() time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	args := []string{childFlag, strconv.Itoa(c.peers), strconv.FormatInt(c.size, 10),
		strconv.Itoa(c.chunk), strconv.FormatInt(c.rate, 10)}
	if c.cmtServe {
		args = append(args, "cmt")
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	stop := func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	var addrs []*p2p.NetAddress
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "READY" {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			cpu := func() time.Duration { return procCPU(cmd.Process.Pid) }
			return addrs, stop, cpu, nil
		}
		if a, ok := strings.CutPrefix(line, "ADDR "); ok {
			na, err := p2p.NewNetAddressString(a)
			if err != nil {
				stop()
				return nil, nil, nil, err
			}
			addrs = append(addrs, na)
		}
	}
	stop()
	return nil, nil, nil, fmt.Errorf("serving child exited before it was ready: %v", sc.Err())
}

// procCPU returns the user + system CPU time of process pid so far, from
// /proc/<pid>/stat (in USER_HZ ticks, 100 per second on Linux), or 0.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fs[11], 10, 64)
	stime, err2 := strconv.ParseInt(fs[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}
