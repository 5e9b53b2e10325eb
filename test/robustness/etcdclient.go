package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"

	lin "github.com/hakube/hakube/test/linearizability"
)

// kvClient runs register operations against one member until ctx ends.
type kvClient struct {
	id   int
	cli  *clientv3.Client
	keys []string
	hist *lin.History
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
		var in lin.Input
		switch r := rng.IntN(100); {
		case r < 40:
			in = lin.Input{Kind: lin.Get, Key: key}
		case r < 65:
			in = lin.Input{Kind: lin.Put, Key: key, Value: value}
		case r < 90:
			in = lin.Input{Kind: lin.CAS, Key: key, Expect: c.seen[key], Value: value}
		default:
			in = lin.Input{Kind: lin.Delete, Key: key}
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
func (c *kvClient) do(in lin.Input) bool {
	octx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	call := c.hist.Now()
	var out lin.Output
	var err error
	switch in.Kind {
	case lin.Get:
		var resp *clientv3.GetResponse
		if resp, err = c.cli.Get(octx, in.Key); err == nil && len(resp.Kvs) > 0 {
			out.Value = string(resp.Kvs[0].Value)
		}
	case lin.Put:
		_, err = c.cli.Put(octx, in.Key, in.Value)
	case lin.Delete:
		_, err = c.cli.Delete(octx, in.Key)
	case lin.CAS:
		cmp := clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)
		if in.Expect == "" {
			cmp = clientv3.Compare(clientv3.CreateRevision(in.Key), "=", 0)
		}
		var resp *clientv3.TxnResponse
		if resp, err = c.cli.Txn(octx).If(cmp).Then(clientv3.OpPut(in.Key, in.Value)).Commit(); err == nil {
			out.Succeeded = resp.Succeeded
		}
	}
	ret := c.hist.Now()
	if err != nil {
		c.failed++
		if in.Kind == lin.Get {
			return false // a failed read has no effect: leave it out
		}
		out, ret = lin.Output{Unknown: true}, lin.UnknownReturn
	} else {
		c.ok++
		switch {
		case in.Kind == lin.Get:
			c.seen[in.Key] = out.Value
		case in.Kind == lin.Put || (in.Kind == lin.CAS && out.Succeeded):
			c.seen[in.Key] = in.Value
		case in.Kind == lin.Delete:
			c.seen[in.Key] = ""
		}
	}
	c.hist.Add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret})
	return err == nil
}
