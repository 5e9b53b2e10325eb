package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// unknownReturn places an operation whose outcome is unknown at the end of time:
// it may have taken effect at any point after its call.
const unknownReturn = int64(1) << 62

// history collects operations from many clients with one monotonic clock.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// kvClient runs register operations against one member until ctx ends.
type kvClient struct {
	id   int
	cli  *clientv3.Client
	keys []string
	hist *history
	// last values read per key, so CAS has a fair chance to succeed.
	seen map[string]string
	seq  int
	// counts
	ok, failed int
}

func (c *kvClient) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(c.id), uint64(time.Now().UnixNano())))
	c.seen = map[string]string{}
	for ctx.Err() == nil {
		key := c.keys[rng.IntN(len(c.keys))]
		c.seq++
		value := fmt.Sprintf("c%d-%d", c.id, c.seq)
		var in Input
		switch r := rng.IntN(100); {
		case r < 40:
			in = Input{Kind: Get, Key: key}
		case r < 65:
			in = Input{Kind: Put, Key: key, Value: value}
		case r < 90:
			in = Input{Kind: CAS, Key: key, Expect: c.seen[key], Value: value}
		default:
			in = Input{Kind: Delete, Key: key}
		}
		if !c.do(in) {
			// The member is down or cut off: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// do runs one operation and records it; it reports whether it got an answer.
func (c *kvClient) do(in Input) bool {
	octx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	call := c.hist.now()
	var out Output
	var err error
	switch in.Kind {
	case Get:
		var resp *clientv3.GetResponse
		if resp, err = c.cli.Get(octx, in.Key); err == nil && len(resp.Kvs) > 0 {
			out.Value = string(resp.Kvs[0].Value)
		}
	case Put:
		_, err = c.cli.Put(octx, in.Key, in.Value)
	case Delete:
		_, err = c.cli.Delete(octx, in.Key)
	case CAS:
		cmp := clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)
		if in.Expect == "" {
			cmp = clientv3.Compare(clientv3.CreateRevision(in.Key), "=", 0)
		}
		var resp *clientv3.TxnResponse
		if resp, err = c.cli.Txn(octx).If(cmp).Then(clientv3.OpPut(in.Key, in.Value)).Commit(); err == nil {
			out.Succeeded = resp.Succeeded
		}
	}
	ret := c.hist.now()
	if err != nil {
		c.failed++
		if in.Kind == Get {
			return false // a failed read has no effect: leave it out
		}
		out, ret = Output{Unknown: true}, unknownReturn
	} else {
		c.ok++
		switch {
		case in.Kind == Get:
			c.seen[in.Key] = out.Value
		case in.Kind == Put || (in.Kind == CAS && out.Succeeded):
			c.seen[in.Key] = in.Value
		case in.Kind == Delete:
			c.seen[in.Key] = ""
		}
	}
	c.hist.add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret})
	return err == nil
}
