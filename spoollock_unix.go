//go:build unix

package statesync

import (
	"io"
	"os"
	"syscall"
)

// lockSpool takes an exclusive, non-blocking lock on path (created if
// needed), held until the returned Closer is closed or the process dies.
// It fails while another open spool (of this or another process) holds it.
func lockSpool(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
