package sdknet

import (
	"fmt"
	"os"
)

// Runner is T for a program (the demo, the bench): Fatalf prints and
// unwinds to Main, which runs the cleanups (stopping every node) and exits
// with status 1.
type Runner struct {
	prefix   string
	base     string
	cleanups []func()
}

type fatal struct{}

// Main runs f with a Runner, then the cleanups, then exits: 0, or 1 when f
// called Fatalf. prefix starts its messages.
func Main(prefix string, f func(r *Runner)) {
	base, err := os.MkdirTemp("", "statesync-"+prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := &Runner{prefix: prefix, base: base}
	code := 0
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(fatal); !ok {
					r.cleanup()
					panic(v)
				}
				code = 1
			}
		}()
		f(r)
	}()
	r.cleanup()
	os.Exit(code)
}

// Helper implements T.
func (r *Runner) Helper() {}

// Logf prints an indented line.
func (r *Runner) Logf(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

// Cleanup registers f to run (last first) when Main ends.
func (r *Runner) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// Fatalf prints the error and unwinds to Main.
func (r *Runner) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, r.prefix+": "+format+"\n", args...)
	panic(fatal{})
}

// TempDir returns a new directory removed when Main ends.
func (r *Runner) TempDir() string {
	d, err := os.MkdirTemp(r.base, "d")
	if err != nil {
		r.Fatalf("%v", err)
	}
	return d
}

func (r *Runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	_ = os.RemoveAll(r.base)
}
