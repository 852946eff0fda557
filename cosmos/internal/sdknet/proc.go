package sdknet

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// node is one exampled (or hostiled) home and, once started, its process.
type Node struct {
	Name, Home string
	ID         string // CometBFT node ID
	P2P        int    // ports on 127.0.0.1
	RPC        int
	GRPC       int

	cmd     *exec.Cmd
	logPath string
	Done    chan struct{} // closed when the process has exited
	WaitErr error         // the exit status, once Done is closed
}

func (n *Node) P2PAddr() string { return fmt.Sprintf("%s@127.0.0.1:%d", n.ID, n.P2P) }
func (n *Node) RPCAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.RPC) }
func (n *Node) RPCURL() string  { return "http://" + n.RPCAddr() }

// Start runs bin with args (and --home) in the background, output to
// <home>/node.log. The test's cleanup stops it.
func (n *Node) Start(t T, bin string, env []string, args ...string) {
	t.Helper()
	n.logPath = filepath.Join(n.Home, "node.log")
	f, err := os.Create(n.logPath)
	if err != nil {
		t.Fatalf("%v", err)
	}
	n.cmd = exec.Command(bin, append(args, "--home", n.Home, "--log_no_color")...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.Env = append(os.Environ(), env...)
	if err := n.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("starting %s: %v", n.Name, err)
	}
	n.Done = make(chan struct{})
	go func() {
		n.WaitErr = n.cmd.Wait()
		_ = f.Close()
		close(n.Done)
	}()
	t.Cleanup(func() { n.Stop(t) })
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after 30 s).
// Idempotent.
func (n *Node) Stop(t T) {
	if n.cmd == nil || n.Done == nil {
		return
	}
	select {
	case <-n.Done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.Done:
	case <-time.After(30 * time.Second):
		t.Logf("%s did not stop on SIGTERM; killing it", n.Name)
		_ = n.cmd.Process.Kill()
		<-n.Done
	}
}

// CPU is the CPU time (user+sys) the process used; 0 until it has exited.
func (n *Node) CPU() time.Duration {
	if !n.Exited() || n.cmd.ProcessState == nil {
		return 0
	}
	return n.cmd.ProcessState.UserTime() + n.cmd.ProcessState.SystemTime()
}

// Exited reports whether the process has exited.
func (n *Node) Exited() bool {
	select {
	case <-n.Done:
		return true
	default:
		return false
	}
}

// Log is the node's output so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// Tail is the end of the node's log, for failure messages.
func (n *Node) Tail() string {
	s := n.Log()
	if len(s) > 6000 {
		s = s[len(s)-6000:]
	}
	return s
}

// WaitLog waits until the node's log contains every one of subs.
func (n *Node) WaitLog(t T, timeout time.Duration, subs ...string) {
	t.Helper()
	WaitFor(t, timeout, n.Name+" logs "+strings.Join(subs, " + "), func() (bool, error) {
		l := n.Log()
		for _, s := range subs {
			if !strings.Contains(l, s) {
				if n.Exited() {
					return false, fmt.Errorf("%s exited (%v)", n.Name, n.WaitErr)
				}
				return false, nil
			}
		}
		return true, nil
	}, n)
}

// WaitFor polls cond every 200 ms until it holds, fails, or timeout.
func WaitFor(t T, timeout time.Duration, what string, cond func() (bool, error), show ...*Node) {
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
				t.Logf("---- %s log (end) ----\n%s", n.Name, n.Tail())
			}
			t.Fatalf("waiting for %s: %v (timeout %v)", what, lastErr, timeout)
		}
		<-tick.C
	}
}

// RunCLI runs bin with args and returns its stdout; a failure fails t.
func RunCLI(t T, bin string, args ...string) string {
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

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(t T, n int) []int {
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
			t.Fatalf("%v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
