package kvapp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// stateFile is the file, in Options.Dir, holding the committed state.
const stateFile = "kvapp-state"

// persist writes the current state (height, app hash, data) to
// Options.Dir, atomically: a temporary file, synced, renamed over the old
// one. A crash leaves the previous state or the new one. Key-value mode
// only; called with a.mtx held, after Commit and after a restore is
// installed. A failure panics: the app cannot go on with its state lost.
func (a *App) persist() {
	if a.opts.Dir == "" || a.streamed {
		return
	}
	ser := Serialize(a.data)
	buf := make([]byte, 0, 8+1+len(a.appHash)+len(ser))
	buf = binary.BigEndian.AppendUint64(buf, uint64(a.height))
	buf = append(buf, byte(len(a.appHash)))
	buf = append(buf, a.appHash...)
	buf = append(buf, ser...)
	if err := writeFileAtomic(filepath.Join(a.opts.Dir, stateFile), buf); err != nil {
		panic(fmt.Sprintf("kvapp: persisting the state at height %d: %v", a.height, err))
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// load reads the state persisted in Options.Dir, if any, into a.
func (a *App) load() error {
	b, err := os.ReadFile(filepath.Join(a.opts.Dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(b) < 9 || len(b) < 9+int(b[8]) {
		return errors.New("kvapp: truncated state file")
	}
	height := int64(binary.BigEndian.Uint64(b))
	n := int(b[8])
	hash := append([]byte(nil), b[9:9+n]...)
	data, err := parse(b[9+n:])
	if err != nil {
		return fmt.Errorf("kvapp: state file: %w", err)
	}
	a.height, a.appHash, a.data, a.size = height, hash, data, int64(len(b)-9-n)
	return nil
}
