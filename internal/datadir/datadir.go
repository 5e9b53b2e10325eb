// Package datadir prepares a process's data directory: Init only checks, so a
// data dir that cannot be used fails before anything is created.
package datadir

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

// DataDir is the component; Dirs (the role's, e.g. server/) are made 0700.
type DataDir struct {
	Layout layout.Layout
	Dirs   []string
}

func (d *DataDir) Name() string { return "data dir" }

func (d *DataDir) Init(context.Context) error {
	existing := d.Layout.DataDir()
	for {
		fi, err := os.Stat(existing)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("--data-dir %s cannot be used: %s is not a directory", d.Layout.DataDir(), existing)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("--data-dir %s cannot be used: %w", d.Layout.DataDir(), err)
		}
		existing = filepath.Dir(existing)
	}
	f, err := os.CreateTemp(existing, ".hakube-write-test-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s is not writable (%v); run as root or choose another --data-dir", d.Layout.DataDir(), unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func (d *DataDir) Start(context.Context) error {
	for _, dir := range append([]string{d.Layout.DataDir()}, d.Dirs...) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

func (d *DataDir) Stop() error { return nil }

// unwrapPath drops the path from a *fs.PathError, which the message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
