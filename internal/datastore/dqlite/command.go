package dqlite

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/k3s-io/kine/pkg/server"
)

// op is the kind of a replicated write.
type op byte

const (
	opCreate op = iota + 1
	opUpdate
	opDelete
	opCompact
	opExpire
	// opBarrier changes nothing but the applied index: a new leader commits
	// one to cover every earlier term, and the leader one per batch of reads
	// (readIndex).
	opBarrier
	// opPut creates the key or updates it whatever its revision, in one
	// entry where kine's Put takes a failed create, a read and an update.
	// Any other op byte is a corrupt entry.
	opPut
)

// command is one replicated write. Everything Apply needs is in it — the
// leader's clock for lease expiry included — so every member computes the
// same result.
type command struct {
	Op    op
	Key   string
	Value []byte
	// Lease is the TTL in seconds (kine's lease IDs are their TTLs).
	Lease int64
	// Rev is the expected mod revision (update, delete; 0 = any) or the
	// revision to compact to.
	Rev int64
	// Now is the leader's clock in Unix nanoseconds.
	Now int64
}

// A compact binary encoding: the log holds every write, so its size matters.
func (c *command) marshal() []byte {
	b := make([]byte, 0, 1+len(c.Key)+len(c.Value)+4*binary.MaxVarintLen64)
	b = append(b, byte(c.Op))
	b = binary.AppendUvarint(b, uint64(len(c.Key)))
	b = append(b, c.Key...)
	b = binary.AppendUvarint(b, uint64(len(c.Value)))
	b = append(b, c.Value...)
	b = binary.AppendVarint(b, c.Lease)
	b = binary.AppendVarint(b, c.Rev)
	b = binary.AppendVarint(b, c.Now)
	return b
}

var errCorrupt = errors.New("corrupt command")

func unmarshalCommand(b []byte) (*command, error) {
	if len(b) < 1 {
		return nil, errCorrupt
	}
	c := &command{Op: op(b[0])}
	b = b[1:]
	bytesField := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errCorrupt
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	intField := func() (int64, error) {
		v, k := binary.Varint(b)
		if k <= 0 {
			return 0, errCorrupt
		}
		b = b[k:]
		return v, nil
	}
	key, err := bytesField()
	if err != nil {
		return nil, err
	}
	c.Key = string(key)
	if c.Value, err = bytesField(); err != nil {
		return nil, err
	}
	if c.Lease, err = intField(); err != nil {
		return nil, err
	}
	if c.Rev, err = intField(); err != nil {
		return nil, err
	}
	if c.Now, err = intField(); err != nil {
		return nil, err
	}
	if len(b) != 0 || c.Op < opCreate || c.Op > opPut {
		return nil, errCorrupt
	}
	return c, nil
}

// result is what applying a command returned; it travels back to a member
// that forwarded the write, so it is JSON-friendly.
type result struct {
	// Rev is the store's revision after the command.
	Rev int64 `json:"rev"`
	// OK is false when a condition failed (the key exists, or its revision moved).
	OK bool `json:"ok"`
	// KV is the key's value: the new one after an update, the deleted one
	// after a delete, the current one after a failed condition, the previous
	// one after a put (none if the key was absent).
	KV *server.KeyValue `json:"kv,omitempty"`
	// Err is a failure that is not a condition: "compacted", "future".
	Err string `json:"err,omitempty"`
}

func (r *result) err() error {
	switch r.Err {
	case "":
		return nil
	case errCompacted:
		return server.ErrCompacted
	case errFuture:
		return server.ErrFutureRev
	default:
		return fmt.Errorf("dqlite: %s", r.Err)
	}
}

const (
	errCompacted = "compacted"
	errFuture    = "future"
)
