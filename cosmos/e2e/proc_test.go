package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// node is one exampled (or hostiled) home and, once started, its process.
type node struct {
	name, home string
	id         string // CometBFT node ID
	p2p        int    // ports on 127.0.0.1
	rpc        int
	grpc       int

	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

func (n *node) p2pAddr() string { return fmt.Sprintf("%s@127.0.0.1:%d", n.id, n.p2p) }
func (n *node) rpcAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.rpc) }
func (n *node) rpcURL() string  { return "http://" + n.rpcAddr() }

// start runs bin with args (and --home) in the background, output to
// <home>/node.log. The test's cleanup stops it.
func (n *node) start(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	n.logPath = filepath.Join(n.home, "node.log")
	f, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, append(args, "--home", n.home, "--log_no_color")...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.Env = append(os.Environ(), env...)
	if err := n.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("starting %s: %v", n.name, err)
	}
	n.done = make(chan struct{})
	go func() {
		n.waitErr = n.cmd.Wait()
		_ = f.Close()
		close(n.done)
	}()
	t.Cleanup(func() { n.stop(t) })
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 30 s).
// Idempotent.
func (n *node) stop(t *testing.T) {
	if n.cmd == nil || n.done == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		t.Logf("%s did not stop on SIGTERM; killing it", n.name)
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// exited reports whether the process has exited.
func (n *node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *node) log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// tail is the end of the node's log, for failure messages.
func (n *node) tail() string {
	s := n.log()
	if len(s) > 6000 {
		s = s[len(s)-6000:]
	}
	return s
}

// waitLog waits until the node's log contains every one of subs.
func (n *node) waitLog(t *testing.T, timeout time.Duration, subs ...string) {
	t.Helper()
	waitFor(t, timeout, n.name+" logs "+strings.Join(subs, " + "), func() (bool, error) {
		l := n.log()
		for _, s := range subs {
			if !strings.Contains(l, s) {
				if n.exited() {
					return false, fmt.Errorf("%s exited (%v)", n.name, n.waitErr)
				}
				return false, nil
			}
		}
		return true, nil
	}, n)
}

// waitFor polls cond every 200 ms until it holds, fails, or timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error), show ...*node) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		var stop bool
		if err != nil && strings.Contains(err.Error(), "exited") {
			stop = true
		}
		if stop || time.Now().After(deadline) {
			for _, n := range show {
				t.Logf("---- %s log (end) ----\n%s", n.name, n.tail())
			}
			t.Fatalf("waiting for %s: %v (timeout %v)", what, lastErr, timeout)
		}
		<-tick.C
	}
}

// runCLI runs bin with args and returns its stdout; a failure fails t.
func runCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err,
			stdout.String(), stderr.String())
	}
	return stdout.String()
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

var errNotYet = errors.New("not yet")
