// Package robustness injects faults into real hakube clusters while clients
// record histories, then checks the histories: etcd-API operations for
// linearizability with porcupine, Kubernetes writes and watches for loss,
// order and gaps.
package robustness

import (
	"fmt"
	"sort"

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
