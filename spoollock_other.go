//go:build !unix

package statesync

import (
	"io"
	"os"
)

// lockSpool opens path; without flock, spools are not protected from a
// concurrent Sync sharing temp_dir (give each node its own temp_dir).
func lockSpool(path string) (io.Closer, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
}
