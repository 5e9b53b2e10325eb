package snapshot

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/fsutil"
)

// Resolve finds the snapshot to restore: a file path, or the name of a
// snapshot in dir.
func Resolve(dir Dir, nameOrPath string) (string, error) {
	if filepath.Base(nameOrPath) == nameOrPath && fsutil.Exists(dir.file(nameOrPath)) {
		return dir.file(nameOrPath), nil
	}
	p, err := filepath.Abs(nameOrPath)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() {
		return "", fmt.Errorf("no snapshot file %s (nor a snapshot of that name in %s); give the path of the snapshot file", nameOrPath, dir)
	}
	return p, nil
}

// Prepare checks a snapshot file before it is used: against the SHA-256 in its
// metadata when it has some (a file copied alone is checked by the datastore's
// own check of its content), uncompressed into work when it is gzipped, and
// tells which datastore it is of. done removes what Prepare wrote.
func Prepare(path, work string) (kind datastore.Kind, plain string, done func(), err error) {
	done = func() {}
	dir, name := Dir(filepath.Dir(path)), filepath.Base(path)
	if fsutil.Exists(dir.meta(name)) {
		if err := dir.Verify(name); err != nil {
			return "", "", done, err
		}
		klog.Infof("snapshot %s matches the SHA-256 in its metadata", name)
	} else {
		klog.Infof("snapshot %s has no metadata beside it; its content is checked as it is restored", name)
	}
	head, err := readHead(path)
	if err != nil {
		return "", "", done, err
	}
	plain = path
	if bytes.HasPrefix(head, []byte{0x1f, 0x8b}) {
		if err := os.MkdirAll(work, 0o700); err != nil {
			return "", "", done, err
		}
		out, err := os.CreateTemp(work, ".restore-*.db")
		if err != nil {
			return "", "", done, err
		}
		plain = out.Name()
		done = func() { _ = os.Remove(plain) }
		if err := gunzip(path, out); err != nil {
			done()
			return "", "", func() {}, fmt.Errorf("uncompressing snapshot %s: %w", name, err)
		}
		if head, err = readHead(plain); err != nil {
			done()
			return "", "", func() {}, err
		}
	}
	switch {
	case bytes.HasPrefix(head, []byte("SQLite format 3\x00")):
		return datastore.Dqlite, plain, done, nil
	case len(head) >= 24 && binary.LittleEndian.Uint32(head[16:20]) == 0xED0CDAED:
		// bbolt's first meta page: a 16-byte page header, then the magic.
		return datastore.Etcd, plain, done, nil
	}
	done()
	return "", "", func() {}, fmt.Errorf("%s is neither an etcd snapshot nor a Dqlite one (the file's first bytes are not of either)", path)
}

func gunzip(path string, out *os.File) error {
	in, err := os.Open(path)
	if err == nil {
		defer in.Close()
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(in); err == nil {
			_, err = io.Copy(out, zr)
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 32)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return head[:n], nil
}
