// Package linearizability is the register model that histories of the
// robustness suites are checked against with porcupine: per key, writes whose
// outcome the client never learned may or may not have taken effect.
package linearizability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// OpKind is a register operation.
type OpKind string

// Register operations.
const (
	Get    OpKind = "get"
	Put    OpKind = "put"
	CAS    OpKind = "cas"
	Delete OpKind = "delete"
)

// Input is one register operation on one key. For CAS, Expect is the value
// compared ("" means the key must be absent) and Value the one written.
type Input struct {
	Kind   OpKind
	Key    string
	Value  string
	Expect string
}

// Output is what the client saw. Unknown means the request failed or timed out,
// so a write may or may not have been applied.
type Output struct {
	Value     string // for Get; "" when absent
	Succeeded bool   // for CAS
	Unknown   bool
}

// state is one key's value; "" means absent.
type state = string

// RegisterModel is a per-key register where writes with an unknown outcome may
// or may not have taken effect, as etcd's robustness model treats them.
var RegisterModel = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{state("")} },
	Step: func(s, in, out any) []any {
		cur, i, o := s.(state), in.(Input), out.(Output)
		switch i.Kind {
		case Get:
			if o.Unknown || o.Value == cur {
				return []any{cur}
			}
			return nil
		case Put, Delete:
			next := i.Value
			if i.Kind == Delete {
				next = ""
			}
			if o.Unknown {
				return []any{cur, next}
			}
			return []any{next}
		case CAS:
			matches := cur == i.Expect
			switch {
			case o.Unknown && matches:
				return []any{cur, i.Value}
			case o.Unknown:
				return []any{cur}
			case o.Succeeded && matches:
				return []any{i.Value}
			case !o.Succeeded && !matches:
				return []any{cur}
			}
			return nil
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string {
		i, o := in.(Input), out.(Output)
		res := ""
		switch {
		case o.Unknown:
			res = "?"
		case i.Kind == Get:
			res = fmt.Sprintf("%q", o.Value)
		case i.Kind == CAS:
			res = fmt.Sprint(o.Succeeded)
		default:
			res = "ok"
		}
		switch i.Kind {
		case Put:
			return fmt.Sprintf("put(%s, %q) -> %s", i.Key, i.Value, res)
		case CAS:
			return fmt.Sprintf("cas(%s, %q -> %q) -> %s", i.Key, i.Expect, i.Value, res)
		case Delete:
			return fmt.Sprintf("delete(%s) -> %s", i.Key, res)
		}
		return fmt.Sprintf("get(%s) -> %s", i.Key, res)
	},
	DescribeState: func(s any) string { return fmt.Sprintf("%q", s.(state)) },
}).ToModel()

// UnknownReturn places an operation whose outcome is unknown at the end of
// time: it may have taken effect at any point after its call.
const UnknownReturn = int64(1) << 62

// History collects operations from many clients with one monotonic clock.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewHistory starts the clock.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time since the start, monotonic.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Since is the wall time since the start.
func (h *History) Since() time.Duration { return time.Since(h.start) }

// Add records one operation.
func (h *History) Add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the recorded operations.
func (h *History) Ops() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Check checks the history; on a violation it writes porcupine's
// visualisation and the history into dir and says so.
func (h *History) Check(dir string) error {
	ops := h.Ops()
	res, info := porcupine.CheckOperationsVerbose(RegisterModel, ops, time.Minute)
	if res == porcupine.Ok {
		return nil
	}
	_ = os.MkdirAll(dir, 0o755)
	_ = porcupine.VisualizePath(RegisterModel, info, filepath.Join(dir, "porcupine.html"))
	b, _ := json.MarshalIndent(ops, "", " ")
	_ = os.WriteFile(filepath.Join(dir, "kv-history.json"), b, 0o644)
	return fmt.Errorf("history of %d operations is not linearizable (%s); porcupine's view and the history are in %s", len(ops), res, dir)
}
