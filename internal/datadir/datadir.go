package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hakube/hakube/internal/layout"
)

// dataDir prepares the data directory. Init only checks, so a data dir that
// cannot be used fails before anything is created.
type dataDir struct{ layout layout.Layout }

func (d *dataDir) Name() string { return "data dir" }

func (d *dataDir) Init(context.Context) error {
	existing := d.layout.DataDir()
	for {
		fi, err := os.Stat(existing)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("--data-dir %s cannot be used: %s is not a directory", d.layout.DataDir(), existing)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("--data-dir %s cannot be used: %w", d.layout.DataDir(), err)
		}
		existing = filepath.Dir(existing)
	}
	f, err := os.CreateTemp(existing, ".hakube-write-test-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s is not writable (%v); run as root or choose another --data-dir", d.layout.DataDir(), unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func (d *dataDir) Start(context.Context) error {
	for _, dir := range []string{d.layout.DataDir(), d.layout.ServerDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

func (d *dataDir) Stop() error { return nil }

// unwrapPath drops the path from a *fs.PathError, which the message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
